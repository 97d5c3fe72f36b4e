#![allow(missing_docs)]
//! The cost of one DPoP proof, as built for every proxied or managed-client
//! request with a DPoP-bound token (`ath` over a JWT-sized token, a nonce).
//!
//! Run with `cargo bench -p oidc-bff-tokens --bench dpop`.

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_bff_tokens::AccessToken;
use oidc_bff_tokens::dpop::{DpopAlg, DpopKey};

fn proof(c: &mut Criterion) {
    let url: url::Url = "https://api.example.com/v1/orders?page=2".parse().unwrap();
    let token = AccessToken::new("a".repeat(900));
    let mut group = c.benchmark_group("dpop");
    for alg in [DpopAlg::Es256, DpopAlg::Es384] {
        let key = DpopKey::generate(alg).unwrap();
        group.bench_function(format!("proof_{}", alg.as_str()), |b| {
            b.iter(|| {
                key.proof(
                    "GET",
                    &url,
                    Some(&token),
                    Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"),
                    1_700_000_000,
                )
                .unwrap()
            });
        });
    }
    let stored = serde_json::to_string(&DpopKey::generate(DpopAlg::Es256).unwrap()).unwrap();
    group.bench_function("parse_stored_key_ES256", |b| {
        b.iter(|| serde_json::from_str::<DpopKey>(&stored).unwrap());
    });
    group.bench_function("generate_ES256", |b| {
        b.iter(|| DpopKey::generate(DpopAlg::Es256).unwrap());
    });
    group.finish();
}

criterion_group!(benches, proof);
criterion_main!(benches);
