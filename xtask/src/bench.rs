//! `cargo xtask bench-crypto [--rounds R] [--seconds S]`: RSA-2048 sign and
//! verify of the default build against `openssl speed rsa2048`, in the same
//! run, plus AEAD decryption of a ~1 KB notification resource.
//!
//! The machine is shared and noisy, so the two sides are interleaved over
//! several rounds (alternating which goes first) and compared by medians.
//! Both are single-threaded and both divide operations by CPU time (the
//! `openssl speed` default; see server/core/examples/crypto_speed.rs). The last
//! line printed is exactly `sign_ratio=<x.xx> verify_ratio=<x.xx> decrypt_per_s=<n>`.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The requirement: the default build at ≥ 0.9× OpenSSL.
const REQUIRED_RATIO: f64 = 0.9;

struct Options {
    rounds: usize,
    seconds: u32,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        rounds: 5,
        seconds: 2,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--seconds" => o.seconds = value("--seconds")?.parse().context("--seconds")?,
            other => bail!("unknown argument {other}; usage: cargo xtask bench-crypto [--rounds R] [--seconds S]"),
        }
    }
    if o.rounds < 5 {
        bail!("--rounds must be at least 5 (single runs swing ±15% on this machine)");
    }
    if o.seconds == 0 || o.seconds > 60 {
        bail!("--seconds must be between 1 and 60");
    }
    Ok(o)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn speed_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    target.join("release/examples/crypto_speed")
}

/// Sign/s and verify/s of one `openssl speed -seconds S rsa2048`.
fn openssl_round(seconds: u32) -> Result<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa2048"])
        .output()
        .context("running `openssl speed` (is the openssl CLI installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl speed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the rsa2048 row of `openssl speed`'s table. OpenSSL 3.0 prints
/// `sign verify sign/s verify/s`; 3.2+ adds encrypt/decrypt columns, so the
/// columns are looked up by their header names.
fn parse_openssl_speed(stdout: &str) -> Result<(f64, f64)> {
    let header: Vec<&str> = stdout
        .lines()
        .find(|l| l.contains("sign/s") && l.contains("verify/s"))
        .context("no `sign/s verify/s` header in openssl speed output")?
        .split_whitespace()
        .collect();
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048") && l.contains("bits"))
        .context("no `rsa 2048 bits` row in openssl speed output")?;
    let values: Vec<&str> = row
        .split("bits")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if values.len() != header.len() {
        bail!("openssl speed row does not match its header: {row:?} vs {header:?}");
    }
    let column = |name: &str| -> Result<f64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} column"))?;
        values[i]
            .parse::<f64>()
            .with_context(|| format!("{name}: {:?}", values[i]))
    };
    Ok((column("sign/s")?, column("verify/s")?))
}

struct Ours {
    sign: f64,
    verify: f64,
    decrypt: f64,
    clock: String,
}

fn our_round(seconds: u32) -> Result<Ours> {
    let out = Command::new(speed_binary())
        .args(["--seconds", &seconds.to_string()])
        .output()
        .with_context(|| format!("running {}", speed_binary().display()))?;
    if !out.status.success() {
        bail!(
            "crypto_speed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .with_context(|| format!("crypto_speed printed no {key}"))
    };
    let number =
        |key: &str| -> Result<f64> { field(key)?.parse().with_context(|| key.to_string()) };
    Ok(Ours {
        sign: number("sign_per_s")?,
        verify: number("verify_per_s")?,
        decrypt: number("decrypt_per_s")?,
        clock: field("clock")?.to_string(),
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn crypto(args: &[String]) -> Result<()> {
    let o = parse_options(args)?;
    let version = Command::new("openssl")
        .arg("version")
        .output()
        .context("the openssl CLI is needed (Debian: apt-get install openssl)")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();

    eprintln!("building the speed probe (release, default features)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "wxpay-combine-core",
            "--example",
            "crypto_speed",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the crypto_speed example failed");
    }

    println!(
        "{version}; {} rounds of {} s per operation, interleaved",
        o.rounds, o.seconds
    );
    println!(
        "{:>5}  {:>12} {:>12}  {:>12} {:>12}  {:>12}",
        "round", "openssl sign", "ours sign", "openssl ver", "ours ver", "decrypt/s"
    );
    let (mut os, mut ov, mut ws, mut wv, mut wd) = (vec![], vec![], vec![], vec![], vec![]);
    let mut clock = String::new();
    for round in 1..=o.rounds {
        // Alternate the order so drift in machine load hits both sides alike.
        let (openssl, ours) = if round % 2 == 1 {
            let a = openssl_round(o.seconds)?;
            (a, our_round(o.seconds)?)
        } else {
            let b = our_round(o.seconds)?;
            (openssl_round(o.seconds)?, b)
        };
        println!(
            "{round:>5}  {:>12.1} {:>12.1}  {:>12.1} {:>12.1}  {:>12.0}",
            openssl.0, ours.sign, openssl.1, ours.verify, ours.decrypt
        );
        os.push(openssl.0);
        ov.push(openssl.1);
        ws.push(ours.sign);
        wv.push(ours.verify);
        wd.push(ours.decrypt);
        clock = ours.clock;
    }
    let (ms_o, mv_o, ms_w, mv_w, md) = (
        median(&os),
        median(&ov),
        median(&ws),
        median(&wv),
        median(&wd),
    );
    println!(
        "median  {ms_o:>12.1} {ms_w:>12.1}  {mv_o:>12.1} {mv_w:>12.1}  {md:>12.0}   (ours measured per {clock} second)"
    );
    let sign_ratio = ms_w / ms_o;
    let verify_ratio = mv_w / mv_o;
    let below = sign_ratio < REQUIRED_RATIO || verify_ratio < REQUIRED_RATIO;
    if below {
        eprintln!("bench-crypto: below the required {REQUIRED_RATIO}× of OpenSSL");
    }
    println!("sign_ratio={sign_ratio:.2} verify_ratio={verify_ratio:.2} decrypt_per_s={md:.0}");
    if below {
        bail!("sign_ratio={sign_ratio:.2} verify_ratio={verify_ratio:.2}: required ≥ {REQUIRED_RATIO}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_3_0_speed_table() {
        let out = "version: 3.0.19\noptions: bn(64,64)\n                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.000816s 0.000022s   1225.0  45891.8\n";
        assert_eq!(parse_openssl_speed(out).unwrap(), (1225.0, 45891.8));
    }

    #[test]
    fn parses_openssl_3_2_speed_table() {
        let out = "                            sign    verify    encrypt   decrypt   sign/s verify/s  encr./s  decr./s\nrsa  2048 bits 0.000800s 0.000020s 0.000021s 0.000790s   1250.0  50000.0  47619.0   1265.8\n";
        assert_eq!(parse_openssl_speed(out).unwrap(), (1250.0, 50000.0));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
