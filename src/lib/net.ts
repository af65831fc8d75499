import { once } from "node:events";
import { type AddressInfo, createConnection, createServer } from "node:net";

/** A loopback TCP port that was free a moment ago (another process may take it before use). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Sends one Redis PING over a fresh plain-TCP socket and resolves with the first line of the
 * reply (`+PONG`, `-NOAUTH ...`, `-LOADING ...`), or with what arrived before the peer closed
 * or `timeoutMs` passed: "" when nothing did. Bytes that cannot start a RESP simple or error
 * reply (a TLS alert, say) end the wait at once. Never rejects; the caller judges the reply.
 */
export function pingReply(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = "";
    const done = () => {
      socket.destroy();
      resolve(reply.split("\r\n", 1)[0] ?? "");
    };
    socket.setTimeout(timeoutMs, done);
    socket.on("error", done);
    socket.on("close", done);
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: Buffer) => {
      reply += chunk.toString("latin1");
      // A line ends the reply; a first byte that is neither + nor - is no RESP reply at all.
      if (reply.includes("\r\n") || !/^[+-]/.test(reply)) done();
    });
  });
}
