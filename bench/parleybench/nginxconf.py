"""nginx in front of every design, configured as roles/nginx deploys the lb, less what cannot
apply on loopback.

Kept from the role: TLS (Mozilla intermediate profile, session cache, no tickets), HTTP/2 on
the TLS listener, the JSON access log, an upstream with 32 keep-alive connections, WebSocket
upgrade headers, `proxy_buffering off` and a one-hour read timeout on /ws/. Left out: the
per-address rate and connection limits (the role exempts 127.0.0.0/8 from them anyway), the
ACME and redirect servers on port 80, static caching.

Read from the role itself (roledefaults.py), so row 3 holds its sockets with what a site gets
by default: connections per worker (`nginx_worker_connections`), the descriptor limit its
template derives from them, and `reuseport` when its TLS listener has it. The one difference:
the descriptor limit is capped at this process's hard limit, which a container without
CAP_SYS_RESOURCE cannot raise (nginx would only log that its setrlimit failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parleybench import roledefaults
from parleybench.tls import TlsFiles

TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True)
class Frontend:
    name: str
    listen_port: int
    backend_port: int


def settings(nofile: int) -> dict[str, int | bool]:
    """The role's defaults as this run applies them (recorded with the results)."""
    role = roledefaults.nginx()
    return {
        "worker_connections": role.worker_connections,
        "role_worker_rlimit_nofile": role.worker_rlimit_nofile,
        "worker_rlimit_nofile": min(role.worker_rlimit_nofile, nofile),
        "reuseport": role.reuseport,
    }


def render(frontends: list[Frontend], tls: TlsFiles, state: Path, nofile: int) -> str:
    chosen = settings(nofile)
    servers = "\n".join(_server(frontend, tls, bool(chosen["reuseport"])) for frontend in frontends)
    return f"""\
worker_processes auto;
worker_rlimit_nofile {chosen["worker_rlimit_nofile"]};
pid {state}/nginx.pid;
error_log {state}/error.log warn;

events {{
    worker_connections {chosen["worker_connections"]};
}}

http {{
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    default_type application/octet-stream;

    log_format parley_json escape=json '{{'
        '"time":"$time_iso8601","request_id":"$request_id","remote_addr":"$remote_addr",'
        '"host":"$host","method":"$request_method","uri":"$uri","protocol":"$server_protocol",'
        '"tls":"$ssl_protocol","status":$status,"request_time":$request_time,'
        '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",'
        '"upstream_response_time":"$upstream_response_time"}}';
    access_log {state}/access.log parley_json;
    gzip off;

    map $http_upgrade $parley_connection_upgrade {{
        default upgrade;
        "" close;
    }}

    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_ciphers {TLS12_CIPHERS};
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:parley_tls:10m;
    ssl_session_timeout 1d;
    ssl_session_tickets off;

{servers}
}}
"""


def _server(frontend: Frontend, tls: TlsFiles, reuseport: bool) -> str:
    upstream = f"bench_{frontend.name}"
    headers = """\
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Request-ID $request_id;"""
    return f"""\
    upstream {upstream} {{
        server 127.0.0.1:{frontend.backend_port} max_fails=3 fail_timeout=10s;
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{frontend.listen_port} ssl http2{" reuseport" if reuseport else ""};
        server_name _;
        ssl_certificate {tls.certificate};
        ssl_certificate_key {tls.key};
        client_max_body_size 1m;

        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{headers}
        }}

        location /ws/ {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $parley_connection_upgrade;
{headers}
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
"""
