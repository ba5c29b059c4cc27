// The official TypeScript SDK's Client against an MCP server started over stdio: lists the tools (so
// the client knows their output schemas and checks results against them, as it does for agents), then
// makes each call and prints, as one JSON array, what the client gave back or the error it threw.
//
//   node sdk_client.mjs '{"modules": ".../node_modules", "command": "...", "args": [...], "env": {...},
//                         "calls": [{"name": "...", "arguments": {...}}]}'
import { createRequire } from "node:module";
import { join } from "node:path";

const spec = JSON.parse(process.argv[2]);
const require = createRequire(join(spec.modules, "resolver.js"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

const client = new Client({ name: "licet-interop-test", version: "1.0.0" });
const transport = new StdioClientTransport({
  command: spec.command, args: spec.args, env: spec.env, cwd: spec.cwd, stderr: "ignore",
});
await client.connect(transport);
const listed = await client.listTools();
const out = [{ tools: listed.tools.map((tool) => tool.name) }];
for (const call of spec.calls) {
  try {
    out.push({ result: await client.callTool({ name: call.name, arguments: call.arguments }) });
  } catch (error) {
    out.push({ error: String(error && error.message ? error.message : error) });
  }
}
await client.close();
process.stdout.write(JSON.stringify(out));
