//! `agent bench`: starts 1 and then N local agents (separate processes on
//! 127.0.0.1) and measures generation speed, time to first token and per-hop
//! latency through the gRPC API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proto::v1 as pb;

use crate::config::BenchArgs;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One configuration's results.
#[derive(Debug, Default)]
struct Stats {
    tok_s: Vec<f64>,
    ttft_ms: Vec<f64>,
    tokens: u32,
    /// (peer, mean round trip ms, p50 round trip ms, mean stage compute ms).
    hops: Vec<(String, f64, f64, f64)>,
}

/// Mean of a histogram from Prometheus text, in ms (`name_sum / name_count`).
fn histogram_mean_ms(text: &str, name: &str) -> f64 {
    let value = |suffix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (value("sum"), value("count"));
    if count > 0.0 {
        sum / count * 1000.0
    } else {
        0.0
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Run the benchmark and print a report.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.agents == 0 || args.runs == 0 {
        bail!("--agents and --runs must be at least 1");
    }
    let model = crate::config::model_path(args.model.clone()).await?;
    let exe = std::env::current_exe().context("locating the agent binary")?;
    println!(
        "# distributed-llm bench: model {}, prompt {:?}, max_tokens {}, {} interleaved runs per configuration (median), loopback",
        model.display(),
        args.prompt,
        args.max_tokens,
        args.runs
    );
    // Both clusters run at once and requests alternate between them, so load from
    // anything else on the machine affects both alike.
    let single = Cluster::start(&exe, &model, 1, &args).await?;
    let pipeline = Cluster::start(&exe, &model, args.agents, &args).await?;
    let (mut one, mut many) = (Stats::default(), Stats::default());
    for _ in 0..args.runs {
        for (c, st) in [(&single, &mut one), (&pipeline, &mut many)] {
            let (tps, ttft, tokens) = generate(&c.channel, &args, args.max_tokens).await?;
            st.tok_s.push(tps);
            st.ttft_ms.push(ttft);
            st.tokens = tokens;
        }
    }
    many.hops = pipeline.hops().await?;
    drop((single, pipeline));
    let (s1, sn) = (median(&one.tok_s), median(&many.tok_s));
    println!();
    println!("| agents | gen tok/s | TTFT ms | tokens |");
    println!("|---|---|---|---|");
    println!(
        "| 1 | {s1:.1} | {:.1} | {} |",
        median(&one.ttft_ms),
        one.tokens
    );
    println!(
        "| {} | {sn:.1} | {:.1} | {} |",
        args.agents,
        median(&many.ttft_ms),
        many.tokens
    );
    println!();
    println!("per-hop latency seen by the entry agent (round trip = network + stage compute):");
    for (peer, avg, p50, compute) in &many.hops {
        println!(
            "  -> {peer}: round trip avg {avg:.2} ms (p50 {p50:.2}), stage compute avg {compute:.2} ms, network+framing avg {:.2} ms",
            (avg - compute).max(0.0)
        );
    }
    if s1 > 0.0 && sn > 0.0 && args.agents > 1 {
        let per_tok_overhead = (1000.0 / sn - 1000.0 / s1) / (args.agents - 1) as f64;
        println!(
            "pipeline/single speed ratio: {:.2}x; added time per token per extra hop: {per_tok_overhead:.2} ms",
            sn / s1
        );
    }
    println!(
        "command: agent bench --agents {} --max-tokens {} --runs {} --prompt {:?}",
        args.agents, args.max_tokens, args.runs, args.prompt
    );
    Ok(())
}

/// Agents started for the benchmark (killed on drop).
struct Cluster {
    _procs: Vec<Proc>,
    channel: tonic::transport::Channel,
    base: u16,
}

impl Cluster {
    fn port(&self, i: usize, k: u16) -> u16 {
        self.base + (i as u16) * 3 + k
    }

    /// Start `n` agents, wait until a request through all of them succeeds, warm up.
    async fn start(exe: &Path, model: &Path, n: usize, args: &BenchArgs) -> Result<Cluster> {
        eprintln!("starting {n} agent(s)...");
        let base = args.base_port + if n == 1 { 0 } else { 30 };
        let port = |i: usize, k: u16| base + (i as u16) * 3 + k;
        let name = if n == 1 { "single" } else { "bench" };
        let mut procs = Vec::new();
        for i in 0..n {
            let mut cmd = Command::new(exe);
            cmd.args(["--node-id", &format!("{name}-{}", i + 1)])
                .args(["--bind-addr", "127.0.0.1", "--advertise-addr", "127.0.0.1"])
                .args(["--bind-port", &port(i, 0).to_string()])
                .args(["--gossip-port", &port(i, 1).to_string()])
                .args(["--metrics-port", &port(i, 2).to_string()])
                .args(["--model", &model.display().to_string()])
                .args(["--log-level", "warn"])
                .env_remove("SEED_NODES")
                .stdout(Stdio::null());
            if i > 0 {
                cmd.arg(format!("--seed-nodes=127.0.0.1:{}", port(0, 1)));
            }
            procs.push(Proc(cmd.spawn().context("starting an agent")?));
        }
        let entry = format!("http://127.0.0.1:{}", port(0, 0));
        let channel = tonic::transport::Channel::from_shared(entry)?.connect_lazy();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = match proto::NodeServiceClient::new(channel.clone())
                .list_members(pb::ListMembersRequest {})
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let alive = pb::MemberState::Alive as i32;
                    r.plan.is_some_and(|p| p.assignments.len() == n)
                        && r.members.iter().filter(|m| m.state == alive).count() == n
                        && r.members
                            .iter()
                            .all(|m| m.advert.as_ref().is_some_and(|a| a.healthy))
                }
                Err(_) => false,
            };
            if ready && generate(&channel, args, 2).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{n} agent(s) did not become ready within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        generate(&channel, args, args.max_tokens).await?; // warm-up
        Ok(Cluster {
            _procs: procs,
            channel,
            base,
        })
    }

    /// Per remote hop of the entry agent: round trip and the stage's compute.
    async fn hops(&self) -> Result<Vec<(String, f64, f64, f64)>> {
        let snap = proto::NodeServiceClient::new(self.channel.clone())
            .get_metrics(pb::GetMetricsRequest {})
            .await?
            .into_inner();
        let mut out = Vec::new();
        for p in snap.peers.iter().filter(|p| p.hop_latency_ms_avg > 0.0) {
            let idx: usize = p
                .peer_id
                .rsplit('-')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(1);
            let url = format!("http://127.0.0.1:{}/metrics", self.port(idx - 1, 2));
            let compute =
                match crate::httpc::request("GET", &url, &[], b"", Duration::from_secs(5)).await {
                    Ok(r) => histogram_mean_ms(&r.text(), "distributed_llm_stage_forward_seconds"),
                    Err(_) => 0.0,
                };
            out.push((
                p.peer_id.clone(),
                p.hop_latency_ms_avg,
                p.hop_latency_ms_p50,
                compute,
            ));
        }
        Ok(out)
    }
}

/// One greedy request; returns (tok/s after the first token, TTFT ms, tokens).
async fn generate(
    channel: &tonic::transport::Channel,
    args: &BenchArgs,
    max_tokens: u32,
) -> Result<(f64, f64, u32)> {
    let req = pb::GenerateRequest {
        messages: vec![pb::ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
            ..Default::default()
        }],
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut stream = proto::InferenceServiceClient::new(channel.clone())
        .generate(req)
        .await?
        .into_inner();
    let mut first = None;
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(pb::generate_response::Event::Token(_)) => {
                first.get_or_insert_with(Instant::now);
            }
            Some(pb::generate_response::Event::Done(d)) => {
                let tokens = d.usage.map(|u| u.completion_tokens).unwrap_or(0);
                let ttft = first.map(|f| f - t0).unwrap_or_default();
                let after = first.map(|f| f.elapsed()).unwrap_or_default();
                let tps = if tokens > 1 && !after.is_zero() {
                    f64::from(tokens - 1) / after.as_secs_f64()
                } else {
                    0.0
                };
                return Ok((tps, ttft.as_secs_f64() * 1000.0, tokens));
            }
            None => {}
        }
    }
    bail!("generation stream ended without a final event")
}
