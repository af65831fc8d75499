import { once } from "node:events";
import { type AddressInfo, createConnection, createServer, type Socket } from "node:net";

/**
 * A TCP proxy for fault injection in tests: put it in front of Redis or an HTTP server and
 * break the network between the two at will. Bytes are never reordered, and only `cut()` loses
 * any: a black hole holds them back (like a partition that TCP later heals), it does not drop.
 * Held bytes are still read and counted (`bytesRead`), so a test can wait until a client has
 * actually sent something into the hole.
 */
export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  /** Connections open now (client side). */
  readonly connections: number;
  /** Connections accepted since the start, refused ones included. */
  readonly accepted: number;
  /** Bytes read so far from clients and from the target (forwarded or still held). */
  readonly bytesRead: { fromClients: number; fromTarget: number };
  /** Holds every chunk, in both directions, `ms` before passing it on (0: none). */
  delay(ms: number): void;
  /** Destroys every current connection, both sides; new ones are accepted as usual. */
  cut(): void;
  /** On: connections (current and new) are kept open but nothing is passed either way. */
  blackhole(on: boolean): void;
  /** On: new connections are closed as soon as they are accepted. */
  refuse(on: boolean): void;
  close(): Promise<void>;
}

export interface TcpProxyOptions {
  targetPort: number;
  targetHost?: string;
  /** Where the proxy listens; default 127.0.0.1, port 0. */
  host?: string;
  /** Sees every chunk as it is read (held ones too), e.g. to learn which requests were sent. */
  onData?: (chunk: Buffer, from: "client" | "target") => void;
}

interface Link {
  client: Socket;
  upstream: Socket;
  toUpstream: Lane;
  toClient: Lane;
}

/**
 * One direction of a link. Chunks wait in a FIFO until their release time, so a delay change
 * never lets a later chunk overtake an earlier one.
 */
class Lane {
  private readonly queue: Array<{ at: number; chunk: Buffer }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    from: Socket,
    private readonly to: Socket,
    private readonly proxy: { delayMs: number; holding: boolean },
    seen: (chunk: Buffer) => void,
  ) {
    from.on("data", (chunk: Buffer) => {
      seen(chunk);
      this.push(chunk);
    });
  }

  push(chunk: Buffer): void {
    const last = this.queue[this.queue.length - 1];
    const at = Math.max(Date.now() + this.proxy.delayMs, last?.at ?? 0);
    this.queue.push({ at, chunk });
    this.drain();
  }

  /** Passes on what is due; while held, chunks keep arriving and wait in the queue. */
  drain(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.proxy.holding) return;
    const now = Date.now();
    while (this.queue.length > 0 && (this.queue[0]?.at ?? 0) <= now) {
      const item = this.queue.shift();
      if (item !== undefined && !this.to.destroyed) this.to.write(item.chunk);
    }
    const next = this.queue[0];
    if (next !== undefined) this.timer = setTimeout(() => this.drain(), next.at - now);
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

export async function startTcpProxy(opts: TcpProxyOptions): Promise<TcpProxy> {
  const targetHost = opts.targetHost ?? "127.0.0.1";
  const state = { delayMs: 0, holding: false, refusing: false, accepted: 0 };
  const links = new Set<Link>();
  const bytesRead = { fromClients: 0, fromTarget: 0 };

  const drop = (link: Link) => {
    if (!links.delete(link)) return;
    link.toUpstream.stop();
    link.toClient.stop();
    link.client.destroy();
    link.upstream.destroy();
  };

  const server = createServer((client) => {
    state.accepted++;
    if (state.refusing) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = createConnection({ host: targetHost, port: opts.targetPort });
    upstream.setNoDelay(true);
    const link: Link = {
      client,
      upstream,
      toUpstream: new Lane(client, upstream, state, (chunk) => {
        bytesRead.fromClients += chunk.length;
        opts.onData?.(chunk, "client");
      }),
      toClient: new Lane(upstream, client, state, (chunk) => {
        bytesRead.fromTarget += chunk.length;
        opts.onData?.(chunk, "target");
      }),
    };
    links.add(link);
    if (state.holding) {
      link.toUpstream.drain();
      link.toClient.drain();
    }
    // Either side ending or failing ends the link: half-open links would hide faults.
    for (const socket of [client, upstream]) {
      socket.on("error", () => drop(link));
      socket.on("close", () => drop(link));
      socket.on("end", () => drop(link));
    }
  });

  server.listen(0, opts.host ?? "127.0.0.1");
  await once(server, "listening");
  const address = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    get connections() {
      return links.size;
    },
    get accepted() {
      return state.accepted;
    },
    get bytesRead() {
      return { ...bytesRead };
    },
    delay(ms) {
      state.delayMs = Math.max(0, ms);
    },
    cut() {
      for (const link of [...links]) drop(link);
    },
    blackhole(on) {
      state.holding = on;
      for (const link of links) {
        link.toUpstream.drain();
        link.toClient.drain();
      }
    },
    refuse(on) {
      state.refusing = on;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const link of [...links]) drop(link);
      });
      return closing;
    },
  };
}
