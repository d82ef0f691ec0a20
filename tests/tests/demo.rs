//! The newcomer's demo (`packaging/demo.py`) runs to the end and its
//! transcript shows both messages arriving, the first one `delivered` (a
//! push is not proof that a model saw it: no Claude Code transcript here).

use std::path::Path;
use std::process::Command;

use claudemesh_e2e::bins;

#[test]
fn the_demo_shows_two_sessions_exchanging_messages() {
    bins::bin(bins::SHIM);
    bins::bin(bins::DAEMON);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/demo.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--bin-dir")
        .arg(bins::profile_dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "📨 from alice: Did the payments schema change?",
        "📨 from bob: Yes: amount is now integer cents.",
        "(bob: delivered)",
    ] {
        assert!(
            transcript.contains(expected),
            "missing {expected:?} in:\n{transcript}"
        );
    }
}
