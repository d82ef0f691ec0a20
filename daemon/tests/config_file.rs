//! `config.json` on disk: atomic 0600 writes, round trips, refusal of a
//! corrupt or newer file, and `CLAUDEMESH_BROKER_URL` (read in a child
//! process, since tests share their process's environment).

use std::path::Path;
use std::process::Command;

use claudemesh_daemon::config::{self, CONFIG_VERSION, Config, ConfigError, MeshConfig};

fn mesh(id: &str, slug: &str, local: bool) -> MeshConfig {
    MeshConfig {
        mesh_id: id.into(),
        slug: slug.into(),
        member_id: format!("member-of-{id}"),
        pubkey: "0f".repeat(32),
        broker_url: "wss://broker.example.org/ws".into(),
        display_name: Some("laptop".into()),
        local,
        joined_at: 1_767_225_600_000,
    }
}

fn sample() -> Config {
    Config {
        version: CONFIG_VERSION,
        meshes: vec![mesh("m-1", "team", false), mesh("m-local", "local", true)],
        default_mesh: Some("m-1".into()),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn missing_file_is_an_empty_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::load(&tmp.path().join("nope/config.json")).unwrap();
    assert!(config.meshes.is_empty());
    assert_eq!(config.version, CONFIG_VERSION);
    assert!(!tmp.path().join("nope").exists(), "loading creates nothing");
}

#[test]
fn save_then_load_round_trips_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cfg");
    let path = dir.join("config.json");
    let config = sample();
    config.save(&path).unwrap();
    assert_eq!(Config::load(&path).unwrap(), config);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["version"], CONFIG_VERSION);
    assert_eq!(json["meshes"][0]["meshId"], "m-1");
    assert_eq!(
        json["meshes"][0]["brokerUrl"],
        "wss://broker.example.org/ws"
    );
    assert_eq!(json["meshes"][1]["local"], true);
    assert_eq!(json["defaultMesh"], "m-1");

    // The file records the current version even if the value said 0.
    let unversioned = Config {
        version: 0,
        ..config.clone()
    };
    unversioned.save(&path).unwrap();
    assert_eq!(Config::load(&path).unwrap().version, CONFIG_VERSION);
}

#[test]
fn save_replaces_atomically_and_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    let mut config = sample();
    for i in 0..20 {
        config.upsert(mesh(&format!("m-{i}"), &format!("slug-{i}"), false));
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"]);
}

#[cfg(unix)]
#[test]
fn save_tightens_an_existing_loose_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, "{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    sample().save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn readers_never_see_a_torn_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    let small = sample();
    let mut big = sample();
    for i in 0..200 {
        big.upsert(mesh(&format!("big-{i}"), &format!("big-slug-{i}"), false));
    }
    small.save(&path).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..100 {
                if i % 2 == 0 { &big } else { &small }.save(&path).unwrap();
            }
        });
        while !writer.is_finished() {
            let read = Config::load(&path).unwrap();
            assert!(read == small || read == big);
        }
    });
}

#[test]
fn a_corrupt_config_is_reported_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, "{\"version\": 1, \"meshes\": [ {\"meshId\": ").unwrap();
    let err = Config::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Corrupt { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("left untouched"), "{text}");
    assert!(text.contains(".bad"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\": 1, \"meshes\": [ {\"meshId\": "
    );

    // Valid JSON of the wrong shape is corrupt too.
    std::fs::write(&path, "[1, 2, 3]").unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::Corrupt { .. })
    ));
}

#[test]
fn a_newer_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(
        &path,
        format!("{{\"version\": {}, \"meshes\": []}}", CONFIG_VERSION + 1),
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::NewerVersion { .. }), "{err}");
    assert!(err.to_string().contains("upgrade claudemesh"), "{err}");
}

#[cfg(unix)]
#[test]
fn an_unreadable_config_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory where the file should be: reading fails for root too.
    let path = tmp.path().join("config.json");
    std::fs::create_dir(&path).unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn modified_follows_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    assert!(config::modified(&path).is_none());
    sample().save(&path).unwrap();
    assert!(config::modified(&path).is_some());
}

// --- CLAUDEMESH_BROKER_URL, in a child process ------------------------------

const CHILD_ENV: &str = "CLAUDEMESH_CONFIG_TEST_CHILD";

/// Not a test of its own: the body of the child processes started below.
#[test]
fn child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // libtest has printed "test child_entry ... " without a newline.
    println!();
    for m in [mesh("m-1", "team", false), mesh("m-local", "local", true)] {
        println!("URL {} {}", m.slug, m.effective_broker_url());
    }
}

fn child_urls(broker_url: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    match broker_url {
        Some(url) => cmd.env("CLAUDEMESH_BROKER_URL", url),
        None => cmd.env_remove("CLAUDEMESH_BROKER_URL"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("URL "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn broker_url_env_redirects_non_local_meshes() {
    assert_eq!(
        child_urls(Some("ws://broker.self-hosted.test:7900/ws")),
        "URL team ws://broker.self-hosted.test:7900/ws\nURL local wss://broker.example.org/ws"
    );
    assert_eq!(
        child_urls(None),
        "URL team wss://broker.example.org/ws\nURL local wss://broker.example.org/ws"
    );
    assert_eq!(
        child_urls(Some("")),
        "URL team wss://broker.example.org/ws\nURL local wss://broker.example.org/ws"
    );
}
