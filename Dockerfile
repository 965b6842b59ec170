# syntax=docker/dockerfile:1
# AgenticCP Agent: the control-plane server, and the agent runner, in one image.
#   docker build -t agenticcp-agent:0.1.0 .
#   server: docker run -p 8000:8000 -e SECRET_KEY=… -e DATABASE_URL=postgres://… agenticcp-agent:0.1.0
#   runner: docker run --init --no-healthcheck --stop-timeout 660 agenticcp-agent:0.1.0 agenticcp-agent run --url … --token-file …
# The commands this image runs are the ones `npm run check:prod` runs in CI on a copy made
# the same way (see docs/deploy.md: Docker cannot run on the build machines).

# Node 22, a supported release line (Node 20 left upstream support on 2026-04-30). The code
# needs 20.12 or later (engines), and CI builds and tests it on Node 20, where no Docker
# engine runs: `--build-arg NODE_VERSION=20` builds that, 24 the newer line.
ARG NODE_VERSION=22

# ---- build: every dependency, then `npm run build` → dist/
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: none of the dependencies this build uses needs its own (package.json allowScripts).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY drizzle ./drizzle
RUN npm run build

# ---- runtime: production dependencies and dist/ only
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    LOG_FORMAT=json
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY drizzle ./drizzle
COPY bin ./bin
COPY --from=build /app/dist ./dist
# The runner's command on PATH; /data (the server's embedded database, a runner's state) and
# /fleet (a registration token handed over in docker-compose.yml) belong to the node user.
RUN ln -s /app/bin/agenticcp-agent.mjs /usr/local/bin/agenticcp-agent \
 && mkdir -p /data /fleet \
 && chown node:node /data /fleet
USER node
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT||8000}/api/v1/health/liveness`).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "dist/server.js"]
