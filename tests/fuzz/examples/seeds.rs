//! Writes the seed inputs (`chime_fuzz::seeds`) into a corpus directory:
//! `cargo run --manifest-path tests/fuzz/Cargo.toml --example seeds -- tests/fuzz/corpus/requests`

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "corpus/requests".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let seeds = chime_fuzz::seeds::seeds();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
    Ok(())
}
