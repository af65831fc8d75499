import { once } from "node:events";
import {
  type AddressInfo,
  createConnection,
  createServer,
  type Server,
  type Socket,
} from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/redis.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";

/** An echo server that also records what each connection sent it. */
interface Echo {
  server: Server;
  port: number;
  received: string[];
  sockets: Set<Socket>;
}

async function startEcho(): Promise<Echo> {
  const received: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    const index = received.push("") - 1;
    socket.on("data", (chunk) => {
      received[index] += chunk.toString();
      socket.write(chunk);
    });
    socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as AddressInfo).port, received, sockets };
}

interface Client {
  socket: Socket;
  data(): string;
  closed: Promise<void>;
}

async function connect(port: number): Promise<Client> {
  const socket = createConnection({ host: "127.0.0.1", port });
  let data = "";
  socket.on("data", (c) => {
    data += c.toString();
  });
  socket.on("error", () => {});
  const closed = once(socket, "close").then(() => undefined);
  await once(socket, "connect");
  return { socket, data: () => data, closed };
}

describe("tcp proxy", () => {
  let echo: Echo;
  const proxies: TcpProxy[] = [];
  const clients: Socket[] = [];

  const proxy = async () => {
    const p = await startTcpProxy({ targetPort: echo.port });
    proxies.push(p);
    return p;
  };
  const client = async (port: number) => {
    const c = await connect(port);
    clients.push(c.socket);
    return c;
  };

  beforeEach(async () => {
    echo = await startEcho();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    for (const s of echo.sockets) s.destroy();
    await new Promise<void>((resolve) => echo.server.close(() => resolve()));
  });

  it("forwards both ways, counts connections and shows the bytes to onData", async () => {
    const tapped: string[] = [];
    const p = await startTcpProxy({
      targetPort: echo.port,
      onData: (chunk, from) => tapped.push(`${from}:${chunk.toString()}`),
    });
    proxies.push(p);
    const c = await client(p.port);
    c.socket.write("hello");
    await waitFor(() => c.data() === "hello", { what: "echo" });
    expect(tapped).toEqual(["client:hello", "target:hello"]);
    expect(echo.received).toEqual(["hello"]);
    expect(p.connections).toBe(1);
    expect(p.accepted).toBe(1);
  });

  it("keeps the byte order when the delay changes between chunks", async () => {
    const p = await proxy();
    const c = await client(p.port);
    p.delay(80);
    // Each byte is read by the proxy before the delay changes. Without the FIFO, "b" (no
    // delay) would overtake "a" (80 ms).
    c.socket.write("a");
    await waitFor(() => p.bytesRead.fromClients === 1, { what: "a read" });
    p.delay(0);
    c.socket.write("b");
    await waitFor(() => p.bytesRead.fromClients === 2, { what: "b read" });
    p.delay(30);
    c.socket.write("c");
    await waitFor(() => c.data().length === 3, { what: "three bytes back" });
    expect(c.data()).toBe("abc");
    expect(echo.received.join("")).toBe("abc");
  });

  it("cut() ends current connections and still accepts new ones", async () => {
    const p = await proxy();
    const first = await client(p.port);
    first.socket.write("x");
    await waitFor(() => first.data() === "x", { what: "first echo" });
    p.cut();
    await first.closed;
    await waitFor(() => p.connections === 0, { what: "links dropped" });

    const second = await client(p.port);
    second.socket.write("y");
    await waitFor(() => second.data() === "y", { what: "second echo" });
  });

  it("blackhole holds bytes in both directions without dropping them", async () => {
    const held = await proxy();
    const open = await proxy();
    const before = await client(held.port);
    held.blackhole(true);
    before.socket.write("held-1");
    // A connection made during the black hole is accepted but gets no answer either.
    const during = await client(held.port);
    during.socket.write("held-2");

    // The proxy has read both messages; a round trip through another proxy to the same server
    // then gives them time to arrive, were they passed on.
    await waitFor(() => held.bytesRead.fromClients === 12, { what: "held bytes read" });
    const control = await client(open.port);
    control.socket.write("control");
    await waitFor(() => control.data() === "control", { what: "control echo" });
    expect(before.data()).toBe("");
    expect(during.data()).toBe("");
    expect(echo.received.join("|")).not.toContain("held");

    held.blackhole(false);
    await waitFor(() => before.data() === "held-1" && during.data() === "held-2", {
      what: "held bytes released",
    });
    expect(held.connections).toBe(2);
  });

  it("refuse() closes new connections at once and leaves current ones alone", async () => {
    const p = await proxy();
    const existing = await client(p.port);
    p.refuse(true);
    const refused = await client(p.port);
    await refused.closed;
    expect(refused.data()).toBe("");

    existing.socket.write("still");
    await waitFor(() => existing.data() === "still", { what: "existing echo" });

    p.refuse(false);
    const again = await client(p.port);
    again.socket.write("ok");
    await waitFor(() => again.data() === "ok", { what: "echo after refuse(false)" });
    expect(p.accepted).toBe(3);
  });

  it("close() ends every connection and stops listening", async () => {
    const p = await proxy();
    const c = await client(p.port);
    await p.close();
    await c.closed;
    const failed = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: "127.0.0.1", port: p.port });
      s.on("connect", () => {
        s.destroy();
        resolve(false);
      });
      s.on("error", () => resolve(true));
    });
    expect(failed).toBe(true);
  });
});
