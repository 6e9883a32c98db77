//! The original Ingester's HTTP client, for real: Python's httpx
//! `AsyncClient` streaming a multipart upload from a file, as the Ingester
//! sends it. An early 507 (capacity) or 401 (no token) must reach it as a
//! status, not as a broken connection, or its retry and failover never
//! trigger (issue 21, item 2). scripts/install-deps.sh installs httpx.

mod common;

use std::process::Command;

use artfs::auth::Role;
use common::api::{token, Api};
use serde_json::Value;

/// Upload FILE to BASE/api/v1/files/upload with httpx.AsyncClient (the
/// file part streamed from disk in chunks), once per token given ("" for
/// none); print one JSON line per attempt: its status, or the error httpx
/// raised instead.
const INGESTER: &str = r#"
import asyncio, json, sys
import httpx

async def main(base, path, tokens):
    async with httpx.AsyncClient(timeout=60) as client:
        for tok in tokens:
            headers = {"Authorization": "Bearer " + tok} if tok else {}
            with open(path, "rb") as f:
                try:
                    r = await client.post(base + "/api/v1/files/upload", headers=headers,
                                          files={"file": ("big.bin", f)},
                                          data={"description": "from httpx"})
                    print(json.dumps({"status": r.status_code, "body": r.text[:500]}))
                except Exception as e:
                    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"#;

fn run_ingester(api: &Api, file: &std::path::Path, tokens: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(INGESTER)
        .arg(&api.base)
        .arg(file)
        .args(tokens)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the httpx client failed to run (scripts/install-deps.sh installs httpx): {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_async_httpx_uploader_sees_early_refusals_as_statuses() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--capacity", "1M"]);
        let dir = tempfile::tempdir().unwrap();
        // Far over the capacity and over any socket buffer: the refusal
        // is decided while most of the body is still to be sent.
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![0x5a_u8; 24 << 20]).unwrap();
        let small = dir.path().join("small.bin");
        std::fs::write(&small, b"fits").unwrap();
        let user = token("ingester", Role::User);
        let got = run_ingester(&api, &big, &[&user, "", &user]);
        for (i, want) in [507, 401, 507].into_iter().enumerate() {
            assert_eq!(got[i]["status"], want, "attempt {i}: {got:?}");
        }
        assert!(
            got[0]["body"].as_str().unwrap().contains("detail"),
            "{got:?}"
        );
        // The same connection pool still uploads what fits.
        let got = run_ingester(&api, &small, &[&user]);
        assert_eq!(got[0]["status"], 201, "{got:?}");
    });
}
