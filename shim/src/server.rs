//! The MCP side: the server handler rmcp drives over stdio.
//!
//! `initialize` is answered from constants, without waiting for the daemon
//! (the session is being attached in the background meanwhile); tool calls
//! wait for it.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, DiscoverRequestMethod, DiscoverResult, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool, ToolsCapability,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};

use crate::session::Session;
use crate::tools;

const INSTRUCTIONS: &str = "claudemesh connects this Claude Code session with the other \
sessions on the user's mesh (on this machine, or on teammates' machines). Messages from other \
sessions arrive as <channel source=\"claudemesh\" from=\"…\" message_id=\"…\"> tags (`from` \
is the sender's name), as additional context from a hook, or as a note on tool results saying \
they are unread (then call check_messages); answer one with send_message to its sender's \
name. list_peers shows who else is working; keep your summary (set_summary) current so others \
know what you work on.";

pub struct Shim {
    session: Arc<Session>,
    tools: Vec<Tool>,
}

impl Shim {
    pub fn new(session: Arc<Session>) -> Shim {
        Shim {
            session,
            tools: tools::list(),
        }
    }
}

impl ServerHandler for Shim {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = Some(ToolsCapability::default());
        // Claude Code's channel notifications (`notifications/claude/channel`).
        capabilities.experimental = Some(
            [("claude/channel".to_owned(), JsonObject::new())]
                .into_iter()
                .collect(),
        );
        let mut info = Implementation::new("claudemesh", env!("CARGO_PKG_VERSION"));
        info.title = Some("claudemesh".to_owned());
        ServerConfig::new(capabilities)
            .with_server_info(info)
            .with_instructions(INSTRUCTIONS)
    }

    /// `server/discover` opens the 2026-07-28 ("modern") era, in which Claude
    /// Code has no channel delivery path. A session that wants pushes
    /// answers it "method not found", so that Claude Code falls back to
    /// `initialize` (the era in which it delivers channel messages); one
    /// that does not want them answers it and never pushes.
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        if self.session.wants_channel() {
            tracing::debug!("server/discover refused: this session wants channel pushes");
            return Err(McpError::method_not_found::<DiscoverRequestMethod>());
        }
        self.session.set_discover_era();
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    /// The client took the `initialize` era: pushes can be delivered.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        let result = self.negotiate_initialize(&request)?;
        self.session.set_initialize_era();
        Ok(result)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        match tools::call(&self.session, &request.name, &args).await {
            Some(result) => Ok(result.into()),
            None => Err(McpError::invalid_params(
                format!(
                    "no tool named `{}`; the tools are list_peers, send_message, \
                     check_messages, message_status, set_summary and set_status",
                    request.name
                ),
                None,
            )),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        tracing::debug!("the MCP client is initialized");
        self.session.set_peer(context.peer);
    }
}

/// Serves MCP on stdio until the client closes it.
pub async fn run(session: Arc<Session>) -> Result<(), String> {
    let transport = rmcp::transport::io::stdio_pipes();
    let running = Shim::new(session)
        .serve(transport)
        .await
        .map_err(|e| format!("the MCP handshake failed: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP service stopped: {e}"))?;
    Ok(())
}
