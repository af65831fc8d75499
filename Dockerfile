# syntax=docker/dockerfile:1
# idunox-job-poller: a production image holding only the compiled daemon and its runtime
# dependencies. The same image runs the built-in simulator and the operator commands
# (track, status, tail), see docker-compose.yml and docs/operations.md.

FROM node:24-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so a source change does not invalidate the npm ci layer. No install
# script is needed to compile (package.json's allowScripts already refuses the dev ones).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json tsconfig.types.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

FROM node:24-bookworm-slim AS runtime
# tini as PID 1 forwards SIGTERM to node and reaps zombies; node as PID 1 would ignore
# signals it has no handler for and leave orphans unreaped.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
# Files stay root-owned and read-only to the process; the daemon writes nothing to disk.
USER node
EXPOSE 9464
# Liveness only (/healthz); readiness (/readyz) belongs to the orchestrator's readiness probe.
# slim images have no curl, so node's own fetch does the request. With POLLER_HTTP_PORT=0 the
# server is off: disable this check then (docker run --no-healthcheck).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.POLLER_HTTP_PORT || 9464) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
# The same command as `npm start` (.ci/check-ops.sh holds them equal). The old generation may
# grow to twice its live size before the next full GC (V8 otherwise lets it reach four times);
# 16 MiB semi-spaces halve the scavenges, which pays for the more frequent full GCs: RSS ~10%
# lower at the same CPU per poll (docs/benchmarks.md, "Memory while saturated").
CMD ["node", "--max-semi-space-size=16", "--heap-growing-percent=100", "dist/cli/main.js", "run"]
