//! The `claudemesh-broker` command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin::{Admin, InviteRole};
use crate::config::BrokerConfig;

#[derive(Parser, Debug)]
#[command(
    name = "claudemesh-broker",
    version,
    about = "The claudemesh routing server and its administration"
)]
pub struct Cli {
    /// Data directory: the SQLite database and the mesh owner keys.
    #[arg(
        long,
        global = true,
        env = "CLAUDEMESH_BROKER_DATA",
        value_name = "DIR"
    )]
    pub data: Option<PathBuf>,
    /// Store everything but the owner keys in this PostgreSQL database
    /// (postgres://user:password@host:port/dbname) instead of the SQLite file
    /// in --data. Admin commands still keep the owner keys in --data.
    #[arg(
        long,
        global = true,
        env = "CLAUDEMESH_BROKER_DATABASE_URL",
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve HTTP and WebSocket on one port.
    Serve(ServeArgs),
    /// Create or list meshes.
    #[command(subcommand)]
    Mesh(MeshCmd),
    /// Create an invite link (`invite <mesh>`) or revoke one (`invite revoke <id>`).
    Invite(InviteArgs),
    /// List or revoke members.
    #[command(subcommand)]
    Member(MemberCmd),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on (put a TLS reverse proxy in front for wss://).
    #[arg(long, default_value = "127.0.0.1:7900")]
    pub listen: SocketAddr,
    /// Public WebSocket URL recorded for invites, e.g. wss://mesh.example.com/ws
    /// (default: ws://<listen>/ws).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Sustained sends per second allowed per member.
    #[arg(long, default_value_t = 200.0)]
    pub send_rate: f64,
    /// Sends a member may make in a burst.
    #[arg(long, default_value_t = 1000.0)]
    pub send_burst: f64,
    /// Live connections allowed per member.
    #[arg(long, default_value_t = 32)]
    pub max_connections_per_member: usize,
    /// Seconds a client has to send its hello.
    #[arg(long, default_value_t = 10.0)]
    pub hello_timeout: f64,
    /// Seconds a dropped session stays listed.
    #[arg(long, default_value_t = 60.0)]
    pub presence_grace: f64,
    /// This node's id among the nodes sharing one PostgreSQL database
    /// (the `node` label of its metrics); keep it across restarts.
    /// Default: <hostname>:<port>.
    #[arg(long, env = "CLAUDEMESH_BROKER_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// A proxy in front of the broker (repeat for several): connections
    /// from this address are counted per client, from the PROXY protocol
    /// v2 header (HAProxy `send-proxy-v2`) or the X-Forwarded-For header
    /// (Caddy, nginx). From other addresses both are not believed.
    #[arg(long = "trusted-proxy", value_name = "ADDR")]
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Subcommand, Debug)]
pub enum MeshCmd {
    /// Create a mesh and its owner key.
    Create { slug: String },
    /// List meshes.
    List,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Member,
    Admin,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct InviteArgs {
    #[command(subcommand)]
    pub action: Option<InviteCmd>,
    /// Mesh slug or id.
    #[arg(required = true)]
    pub mesh: Option<String>,
    /// Role given to whoever joins.
    #[arg(long, value_enum, default_value = "member")]
    pub role: RoleArg,
    /// How many joins the invite allows (default: unlimited until it expires).
    #[arg(long)]
    pub uses: Option<u32>,
    /// Lifetime: a number with s, m, h, d or w (e.g. 30m, 12h, 7d).
    #[arg(long, default_value = "7d")]
    pub expires: String,
    /// Broker URL written into the link (default: the one recorded by `serve`).
    #[arg(long, value_name = "URL")]
    pub broker_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum InviteCmd {
    /// Revoke an invite by id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// List the members of a mesh.
    List { mesh: String },
    /// Revoke a member (by public key or display name): its connections
    /// close at once and it cannot reconnect.
    Revoke { mesh: String, member: String },
}

/// Parses `30s`, `15m`, `12h`, `7d`, `2w` or plain seconds.
pub fn parse_duration_secs(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration such as 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("{s:?} is not a duration such as 30m, 12h or 7d"),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .with_context(|| format!("{s:?} is not a positive duration"))
}

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    cli.data
        .clone()
        .context("give the data directory with --data DIR (or CLAUDEMESH_BROKER_DATA)")
}

/// Runs an administration command (everything but `serve`).
pub fn run_admin(cli: &Cli) -> anyhow::Result<()> {
    let admin = Admin::open_store(&data_dir(cli)?, cli.database_url.as_deref())?;
    match &cli.command {
        Command::Serve(_) => unreachable_serve(),
        Command::Mesh(MeshCmd::Create { slug }) => {
            let mesh = admin.create_mesh(slug)?;
            println!("mesh {} created", mesh.slug);
            println!("id:           {}", mesh.id);
            println!("owner pubkey: {}", mesh.owner_pubkey);
        }
        Command::Mesh(MeshCmd::List) => {
            for m in admin.list_meshes()? {
                println!("{}\t{}\t{}", m.slug, m.id, m.owner_pubkey);
            }
        }
        Command::Invite(args) => match (&args.action, &args.mesh) {
            (Some(InviteCmd::Revoke { id }), _) => {
                admin.revoke_invite(id)?;
                println!("invite {id} revoked");
            }
            (None, Some(mesh)) => {
                let role = match args.role {
                    RoleArg::Member => InviteRole::Member,
                    RoleArg::Admin => InviteRole::Admin,
                };
                let secs = parse_duration_secs(&args.expires)?;
                let url = args.broker_url.clone().unwrap_or_default();
                let (id, link) = admin.create_invite(mesh, role, args.uses, secs, &url)?;
                let uses = args
                    .uses
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                eprintln!(
                    "invite {id}: role {}, uses {uses}, expires in {}",
                    role.as_str(),
                    args.expires
                );
                println!("{link}");
            }
            (None, None) => bail!("name the mesh: invite <mesh>"),
        },
        Command::Member(MemberCmd::List { mesh }) => {
            for m in admin.list_members(mesh)? {
                let state = if m.revoked { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{}\t{state}",
                    m.id,
                    m.pubkey,
                    printable(&m.display_name),
                    m.role
                );
            }
        }
        Command::Member(MemberCmd::Revoke { mesh, member }) => {
            let m = admin.revoke_member(mesh, member)?;
            println!(
                "member {} ({}) revoked; a running server closes its connections within a second",
                printable(&m.display_name),
                m.pubkey
            );
        }
    }
    Ok(())
}

/// A stored name made safe for a terminal: control characters (a name
/// recorded before joins refused them could hold escape sequences) are
/// shown escaped, as `\u{1b}`, never written raw.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn unreachable_serve() {
    // `serve` is dispatched by main before admin commands.
}

/// The server configuration for `serve`.
pub fn serve_config(cli: &Cli, args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    // With PostgreSQL the server keeps nothing in a data directory.
    let dir = match &cli.database_url {
        Some(_) => cli.data.clone().unwrap_or_default(),
        None => data_dir(cli)?,
    };
    let mut config = BrokerConfig::new(args.listen, dir);
    config.database_url = cli.database_url.clone();
    config.public_url = args.public_url.clone();
    config.send_rate_per_sec = args.send_rate;
    config.send_burst = args.send_burst.max(1.0);
    config.max_connections_per_member = args.max_connections_per_member.max(1);
    config.hello_timeout = secs(args.hello_timeout)?;
    config.presence_grace = secs(args.presence_grace)?;
    config.node_id = args.node_id.as_deref().map(node_id).transpose()?;
    config.trusted_proxies = args.trusted_proxies.clone();
    Ok(config)
}

/// A node id: printable, no spaces, at most 128 bytes (it becomes a
/// metric label value and a log field).
fn node_id(id: &str) -> anyhow::Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if !ok {
        bail!(
            "--node-id {id:?}: use 1 to 128 printable ASCII characters without spaces, quotes or backslashes"
        );
    }
    Ok(id.to_owned())
}

fn secs(v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{v} is not a valid number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("7d").unwrap(), 604_800);
        assert_eq!(parse_duration_secs("30m").unwrap(), 1800);
        assert_eq!(parse_duration_secs("45").unwrap(), 45);
        assert!(parse_duration_secs("7x").is_err());
        assert!(parse_duration_secs("0d").is_err());
        assert!(parse_duration_secs("").is_err());
    }

    #[test]
    fn invite_revoke_is_a_subcommand_and_invite_mesh_a_positional() {
        let cli = Cli::try_parse_from(["b", "--data", "/d", "invite", "revoke", "inv_1"]).unwrap();
        match cli.command {
            Command::Invite(InviteArgs {
                action: Some(InviteCmd::Revoke { id }),
                ..
            }) => assert_eq!(id, "inv_1"),
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["b", "--data", "/d", "invite", "team", "--uses", "2"]).unwrap();
        match cli.command {
            Command::Invite(InviteArgs {
                action: None,
                mesh: Some(m),
                uses: Some(2),
                ..
            }) => assert_eq!(m, "team"),
            other => panic!("{other:?}"),
        }
    }

    fn serve_config_of(args: &[&str]) -> anyhow::Result<BrokerConfig> {
        let base = ["b", "--database-url", "postgres://u@h/db", "serve"];
        let cli = Cli::try_parse_from(base.iter().chain(args)).unwrap();
        let Command::Serve(serve) = &cli.command else {
            panic!("not serve")
        };
        serve_config(&cli, serve)
    }

    #[test]
    fn the_node_id_is_the_flag_or_the_host_and_port() {
        let c = serve_config_of(&["--node-id", "n1"]).unwrap();
        assert_eq!(c.node_id.as_deref(), Some("n1"));
        let c = serve_config_of(&["--listen", "127.0.0.1:7911"]).unwrap();
        let id = c.node_id_or(c.listen);
        assert!(id.ends_with(":7911"), "{id}");
        assert!(id.len() > ":7911".len(), "{id}");
        for bad in ["", "two words", "q\"uote", &"x".repeat(129)] {
            let e = serve_config_of(&["--node-id", bad]).unwrap_err();
            assert!(e.to_string().contains("--node-id"), "{e}");
        }
    }

    #[test]
    fn trusted_proxies_repeat_and_must_be_addresses() {
        let c =
            serve_config_of(&["--trusted-proxy", "127.0.0.1", "--trusted-proxy", "::1"]).unwrap();
        assert_eq!(
            c.trusted_proxies,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert!(serve_config_of(&[]).unwrap().trusted_proxies.is_empty());
        let base = ["b", "--data", "/d", "serve", "--trusted-proxy"];
        for bad in ["proxy.example.com", "10.0.0.0/8", ""] {
            let e = Cli::try_parse_from(base.iter().chain([&bad])).unwrap_err();
            assert!(e.to_string().contains("--trusted-proxy"), "{e}");
        }
    }
}
