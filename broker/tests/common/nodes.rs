//! Several in-process broker nodes on one fresh PostgreSQL database, each
//! with its own node id (node 1 made the mesh and enrolls the members).

use std::time::Duration;

use super::{Backend, Member, TestBroker, test_config};

/// `n` nodes on one fresh database (node 1 made the mesh and enrolls the
/// members), each with its own node id.
pub struct Nodes {
    pub nodes: Vec<TestBroker>,
}

impl Nodes {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Duration::from_secs(60)).await
    }

    /// With a presence grace of `grace` on every node.
    pub async fn start_with(n: usize, grace: Duration) -> Self {
        let first = TestBroker::start_on(Backend::Postgres, |c| {
            c.node_id = Some("node-1".into());
            c.presence_grace = grace;
        })
        .await;
        let mut nodes = vec![first];
        for i in 2..=n {
            nodes.push(Self::node(&nodes[0], i, grace).await);
        }
        Self { nodes }
    }

    /// Another node on `first`'s database.
    async fn node(first: &TestBroker, i: usize, grace: Duration) -> TestBroker {
        let mut config = test_config(first.dir.path());
        config.node_id = Some(format!("node-{i}"));
        config.presence_grace = grace;
        first.join(config).await
    }

    /// Node `i`, counting from 1.
    pub fn n(&self, i: usize) -> &TestBroker {
        &self.nodes[i - 1]
    }

    pub fn member(&self, name: &str) -> Member {
        self.nodes[0].member(name)
    }
}
