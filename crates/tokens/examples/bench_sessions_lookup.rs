//! Session lookup latency with many sessions in Redis and PostgreSQL
//! (`bench/sessions_lookup.sh` runs it).
//!
//! ```text
//! cargo run --release -p oidc-bff-tokens --features redis,postgres \
//!     --example bench_sessions_lookup -- --sessions 1000000 --lookups 20000
//! ```
//!
//! Fills the store with N sessions (concurrent `create`s: encryption and one
//! round trip each, as at sign-in), then times `load` of random existing
//! sessions one after another: decryption and deserialisation included.
//! Session ids are derived from their index, so a filled store can be kept
//! (`--keep`) and measured again without refilling. Without `--keep` the
//! sessions are deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use oidc_bff_tokens::store::{KeyRing, PostgresStore, RedisStore, SessionStore};
use oidc_bff_tokens::{
    AccessToken, Clock as _, IdToken, RefreshToken, SessionId, SessionRecord, SystemClock,
    UserTokens,
};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

struct Args {
    sessions: usize,
    lookups: usize,
    concurrency: usize,
    backends: Vec<String>,
    keep: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        sessions: 1_000_000,
        lookups: 20_000,
        concurrency: 64,
        backends: vec!["redis".into(), "postgres".into()],
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sessions" => a.sessions = value()?.parse().map_err(|e| format!("{e}"))?,
            "--lookups" => a.lookups = value()?.parse().map_err(|e| format!("{e}"))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("{e}"))?,
            "--backend" => a.backends = value()?.split(',').map(str::to_owned).collect(),
            "--keep" => a.keep = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// The id of session `i`: the same in every run.
fn id(i: usize) -> SessionId {
    let digest = Sha256::new()
        .chain_update(b"oidc-bff bench session")
        .chain_update((i as u64).to_le_bytes())
        .finalize();
    SessionId::parse(&URL_SAFE_NO_PAD.encode(digest)).expect("43 base64url characters")
}

/// A session like a real one: JWT-sized access and id tokens, a few claims.
fn record(i: usize, now: u64) -> SessionRecord {
    let mut claims = serde_json::Map::new();
    for (k, v) in [
        ("sub", format!("user-{i}")),
        ("name", "Alice Example".to_owned()),
        ("email", format!("user-{i}@example.com")),
        ("iss", "https://login.example.com".to_owned()),
        ("aud", "bff".to_owned()),
        ("sid", format!("sid-{i}")),
    ] {
        claims.insert(k.into(), v.into());
    }
    claims.insert("email_verified".into(), true.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + 300).into());
    claims.insert("auth_time".into(), now.into());
    SessionRecord {
        sub: format!("user-{i}"),
        sid: Some(format!("sid-{i}")),
        claims,
        tokens: UserTokens {
            access_token: AccessToken::new(format!("{i:0>900}")),
            expires_at: now + 7 * 86400,
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::new(format!("{i:0>43}"))),
            id_token: Some(IdToken::new(format!("{i:0>900}"))),
            scope: Some("openid profile email offline_access".into()),
            refreshed_at: None,
            refresh_count: 0,
            issued_at: Some(now),
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 7 * 86400,
        last_active: now,
        logout_id: format!("{i:0>43}"),
        user_agent: None,
        dpop_key: None,
    }
}

/// A fixed key: the kept data must stay readable. Benchmark data only.
fn keys() -> KeyRing {
    KeyRing::new("bench", [0x42; 32]).expect("key ring")
}

async fn run(
    name: &str,
    store: Arc<dyn SessionStore>,
    a: &Args,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let now = SystemClock.now_unix();
    let complete = store.load(&id(0)).await?.is_some()
        && store.load(&id(a.sessions - 1)).await?.is_some()
        && store.load(&id(a.sessions)).await?.is_none();
    let mut fill_per_s = None;
    if !complete {
        eprintln!("{name}: writing {} sessions", a.sessions);
        let started = Instant::now();
        let mut done = 0usize;
        let mut writes = futures_util::stream::iter(0..a.sessions)
            .map(|i| {
                let store = store.clone();
                async move { store.create(&id(i), record(i, now)).await }
            })
            .buffer_unordered(a.concurrency);
        while let Some(result) = writes.next().await {
            result?;
            done += 1;
            if done.is_multiple_of(100_000) {
                eprintln!(
                    "{name}: {done} written, {:.0}/s",
                    done as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        fill_per_s = Some((a.sessions as f64 / started.elapsed().as_secs_f64()).round());
    } else {
        eprintln!(
            "{name}: {} sessions already there (kept from a previous run)",
            a.sessions
        );
    }

    let mut rng = rand::rng();
    // Warm-up: connections, statement caches.
    for _ in 0..a.lookups.min(1000) {
        store.load(&id(rng.random_range(0..a.sessions))).await?;
    }
    let mut times = Vec::with_capacity(a.lookups);
    for _ in 0..a.lookups {
        let i = rng.random_range(0..a.sessions);
        let started = Instant::now();
        let found = store.load(&id(i)).await?;
        times.push(started.elapsed());
        let found = found.ok_or("a written session was not found")?;
        if found.record.sub != format!("user-{i}") {
            return Err("wrong session loaded".into());
        }
    }
    // Misses cost a round trip too (unknown or forged cookies).
    let mut misses = Vec::with_capacity(a.lookups / 10);
    for _ in 0..a.lookups / 10 {
        let unknown = SessionId::generate();
        let started = Instant::now();
        let found = store.load(&unknown).await?;
        misses.push(started.elapsed());
        if found.is_some() {
            return Err("an unknown id was found".into());
        }
    }
    times.sort();
    misses.sort();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let q = |v: &[Duration], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .map(us)
    };
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    let result = serde_json::json!({
        "store": name,
        "sessions": a.sessions,
        "lookups": a.lookups,
        "fill_per_s": fill_per_s,
        "p50_us": q(&times, 0.5),
        "p90_us": q(&times, 0.9),
        "p99_us": q(&times, 0.99),
        "p999_us": q(&times, 0.999),
        "mean_us": us(mean),
        "miss_p50_us": q(&misses, 0.5),
        "miss_p99_us": q(&misses, 0.99),
    });
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    for backend in &a.backends {
        match backend.as_str() {
            "redis" => {
                let url = std::env::var("OIDC_BFF_TEST_REDIS")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                let store = Arc::new(
                    RedisStore::builder(url)
                        .key_prefix("oidc-bff-bench-lookup:")
                        .encryption(keys())
                        // The backend's lookup, not the read cache's.
                        .read_cache(0)
                        .build()
                        .await?,
                );
                println!("{}", run("redis", store.clone(), &a).await?);
                if !a.keep {
                    store.drop_all().await?;
                }
            }
            "postgres" => {
                let url = std::env::var("OIDC_BFF_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let store = Arc::new(
                    PostgresStore::builder(url)
                        .table_prefix("bench_lookup_")
                        .encryption(keys())
                        .max_connections(16)
                        // The backend's lookup, not the read cache's.
                        .read_cache(0)
                        .build()
                        .await?,
                );
                println!("{}", run("postgres", store.clone(), &a).await?);
                if !a.keep {
                    store.drop_tables().await?;
                }
            }
            other => return Err(format!("unknown backend {other}").into()),
        }
    }
    Ok(())
}
