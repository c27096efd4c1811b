//! `fetch-model`: downloads the default model into the cache and prints its path.

fn main() {
    match engine::fetch::ensure_default_model() {
        Ok(p) => println!("{}", p.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
