// Drives claudemesh-shim with the official MCP TypeScript SDK client, as an
// independent MCP client would: two sessions ("alice" and "bob"), every tool
// listed and called, and bob receiving alice's message as a
// `notifications/claude/channel` push.
//
// Usage: node sdk_client.mjs <path to claudemesh-shim>
// The environment (CLAUDEMESH_* dirs, CLAUDEMESH_DAEMON) is passed to the
// shims. Prints one JSON summary line; exits non-zero on any failure.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const shim = process.argv[2];
if (!shim) {
  console.error("usage: node sdk_client.mjs <claudemesh-shim>");
  process.exit(2);
}

const EXPECTED_TOOLS = [
  "check_messages",
  "list_peers",
  "message_status",
  "send_message",
  "set_status",
  "set_summary",
];

function fail(message) {
  console.error(`sdk_client: ${message}`);
  process.exit(1);
}

// Each shim runs under its own `sh`, which stays its parent: a distinct
// "Claude Code" process per session, as in real use.
async function connect(name) {
  const transport = new StdioClientTransport({
    command: "sh",
    args: ["-c", '"$0"; exit $?', shim],
    env: { ...process.env, CLAUDEMESH_DISPLAY_NAME: name },
    stderr: "inherit",
  });
  const client = new Client({ name: `sdk-${name}`, version: "1.0.0" });
  const channel = [];
  client.fallbackNotificationHandler = async (n) => {
    if (n.method === "notifications/claude/channel") channel.push(n.params);
  };
  await client.connect(transport);
  return { client, channel, name };
}

async function call(session, name, args = {}) {
  const result = await session.client.callTool({ name, arguments: args });
  if (result.isError) {
    fail(`${session.name}: ${name} failed: ${JSON.stringify(result.content)}`);
  }
  return result;
}

async function until(what, probe, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const alice = await connect("alice");
const bob = await connect("bob");

const caps = alice.client.getServerCapabilities();
if (!caps?.experimental?.["claude/channel"]) {
  fail(`the shim does not declare experimental["claude/channel"]: ${JSON.stringify(caps)}`);
}

const tools = (await alice.client.listTools()).tools;
const names = tools.map((t) => t.name).sort();
if (JSON.stringify(names) !== JSON.stringify(EXPECTED_TOOLS)) {
  fail(`tools are ${names.join(", ")}`);
}
for (const t of tools) {
  if (!t.description || t.inputSchema?.type !== "object") {
    fail(`tool ${t.name} lacks a description or an object schema`);
  }
}

await call(bob, "set_summary", { summary: "reviewing the SDK path" });
await call(bob, "set_status", { status: "idle" });

const bobPeer = await until("alice to see bob", async () => {
  const peers = (await call(alice, "list_peers")).structuredContent?.peers ?? [];
  return peers.find((p) => p.name === "bob" && !p.self);
});
if (bobPeer.summary !== "reviewing the SDK path") {
  fail(`bob's summary is ${JSON.stringify(bobPeer.summary)}`);
}

const sent = await call(alice, "send_message", {
  to: "bob",
  text: "hello from the TypeScript SDK",
  priority: "now",
});
const messageId = sent.structuredContent?.messageId;
if (!messageId) fail(`send_message returned no messageId: ${JSON.stringify(sent)}`);

const pushed = await until("bob's channel notification", async () =>
  bob.channel.find((p) => p.content === "hello from the TypeScript SDK"),
);
for (const [k, v] of Object.entries(pushed.meta ?? {})) {
  if (typeof v !== "string") fail(`channel meta ${k} is not a string`);
}
if (pushed.meta.from !== "alice") fail(`channel meta.from is ${pushed.meta.from}`);

// A push is not proof that a model saw it (there is no Claude Code
// transcript here to confirm it): not seen yet; once the push window has
// passed, check_messages shows it, once.
const before = await call(alice, "message_status", { message_id: messageId });
if ((before.structuredContent?.recipients ?? []).some((x) => x.state === "seen")) {
  fail(`a push alone made the message seen: ${JSON.stringify(before.structuredContent)}`);
}
const isIt = (m) => m.text === "hello from the TypeScript SDK";
const shown = await until("check_messages to show the unconfirmed push", async () => {
  const r = await call(bob, "check_messages");
  const n = (r.structuredContent?.messages ?? []).filter(isIt).length;
  return n > 0 ? n : null;
});
if (shown !== 1) fail(`check_messages showed the message ${shown} times`);
const inbox = await call(bob, "check_messages");
if ((inbox.structuredContent?.messages ?? []).some(isIt)) {
  fail("check_messages showed the message a second time");
}

const seen = await until("message_status to reach seen", async () => {
  const st = await call(alice, "message_status", { message_id: messageId });
  const r = st.structuredContent?.recipients ?? [];
  return r.length > 0 && r.every((x) => x.state === "seen") ? r : null;
});

console.log(
  JSON.stringify({
    ok: true,
    tools: names,
    messageId,
    notification: pushed.meta,
    status: seen.map((r) => r.state),
  }),
);
await alice.client.close();
await bob.client.close();
process.exit(0);
