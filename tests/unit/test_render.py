"""Templates rendered from default and non-default settings: valid YAML, the documented behaviour."""

from pathlib import Path

import yaml

from vpskit import app_check, node_version, settings
from vpskit.render import dotenv_quote, render

EXAMPLE = Path(__file__).resolve().parents[2] / "example"


def ctx(info=None, **overrides):
    s = settings.load(overrides)
    s.update(app_image="example:abc123", app_version="abc123")
    s["app"] = info or app_check.check(EXAMPLE)
    node_version.settle(s)
    s.update(s["app"].context("example", "abc123"))
    return s


def compose(**overrides):
    return yaml.safe_load(render("docker-compose.yml", **ctx(**overrides)))


def test_default_compose():
    c = compose()
    app, db = c["services"]["app"], c["services"]["db"]
    assert c["name"] == "example"
    assert app["image"] == "example:abc123"
    # Never published: the server's proxy owns the ports, and the app joins its network.
    assert "ports" not in app and "ports" not in db
    assert app["networks"] == {"internal": {}, "edge": {"aliases": ["example-app"]}}
    assert c["networks"]["edge"] == {"name": "vpskit-proxy", "external": True}
    assert app["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert app["restart"] == db["restart"] == "unless-stopped"
    assert "/api/health/ready" in " ".join(app["healthcheck"]["test"])
    assert "pg_isready -h 127.0.0.1" in db["healthcheck"]["test"][1]
    assert app["deploy"]["resources"]["limits"] == {"cpus": "1.0", "memory": "448m"}
    assert app["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    assert db["stop_grace_period"] == "60s"
    assert set(c["volumes"]) == {"db-data", "media"}
    assert app["read_only"] is True and app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    assert "traefik.enable" not in str(app)


def test_the_database_gets_its_own_variables_only():
    """Not the app's .env (review item 2): a change to an app variable must not recreate postgres, and the db
    container must not hold the app's secrets. Its three variables come from .env by Compose's interpolation."""
    for role in ("all", "db"):
        extra = {"role": "db", "private_address": "10.0.0.7", "database_clients": "10.0.0.5"} if role == "db" else {}
        db = compose(**extra)["services"]["db"]
        assert "env_file" not in db
        assert {k: v.split(":?")[0] for k, v in db["environment"].items()} == {
            "POSTGRES_USER": "${POSTGRES_USER", "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD",
            "POSTGRES_DB": "${POSTGRES_DB"}


def test_compose_behind_a_traefik_network():
    c = compose(publish_port=0, proxy_network="web", domain="cms.example.com", traefik_labels=True,
                app_memory_limit="768m", app_cpu_limit="0.5")
    app = c["services"]["app"]
    assert "ports" not in app
    assert app["networks"] == {"internal": {}, "proxy": {}}
    assert c["networks"]["proxy"] == {"name": "web", "external": True}
    assert app["labels"]["traefik.http.routers.example.rule"] == "Host(`cms.example.com`)"
    assert app["labels"]["traefik.http.services.example.loadbalancer.server.port"] == "3000"
    assert app["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": "768m"}


def test_proxy_publishes_what_each_app_asks_and_routes_by_domain():
    from vpskit import proxy

    s = ctx(publish_host="0.0.0.0", publish_port=8080, domain="shop.example.com")
    assert proxy.app_ports(s) == ("80:80", "443:443", "0.0.0.0:8080:8080")
    route = render("proxy-route.caddy", **s)
    assert "shop.example.com {\n\t@vpskit_too_large expression" in route
    assert "http://:8080 {\n\t@vpskit_too_large" in route
    assert route.count("\treverse_proxy @UPSTREAM@ example-app:3000 {\n\t\tlb_policy first") == 2
    # Another app's ports stay when this one deploys; the published set is stable in order.
    both = proxy.union({"shop": proxy.app_ports(s), "blog": ("127.0.0.1:3001:3001",)})
    assert both == ("80:80", "443:443", "127.0.0.1:3001:3001", "0.0.0.0:8080:8080")
    compose_file = yaml.safe_load(proxy.compose_file(both, "caddy:2", ""))
    assert compose_file["services"]["proxy"]["ports"] == list(both)
    assert "./etc:/etc/caddy:ro" in compose_file["services"]["proxy"]["volumes"]
    # A port that something else on the server listens on is refused; one the proxy already publishes is not.
    assert proxy.taken(("127.0.0.1:3001:3001",), (), {22, 3001}) == [3001]
    assert proxy.taken(("127.0.0.1:3001:3001",), ("127.0.0.1:3001:3001",), {22, 3001}) == []
    caddyfile = proxy.caddyfile({**s, "acme_email": "ops@example.com", "acme_ca": "https://ca.test/dir",
                                 "acme_ca_root": "/etc/vpskit/root.pem"})
    assert "email ops@example.com" in caddyfile and "acme_ca https://ca.test/dir" in caddyfile
    assert "acme_ca_root /etc/vpskit-acme-root.pem" in caddyfile and "import sites/*.caddy" in caddyfile


def test_dockerfile_is_multi_stage_non_root_with_healthcheck():
    text = render("Dockerfile", **ctx(node_image="node:22-bookworm-slim", app_port=4000))
    froms = [ln for ln in text.splitlines() if ln.startswith("FROM ")]
    assert froms == ["FROM node:22-bookworm-slim AS base", "FROM base AS deps",
                     "FROM deps AS build", "FROM node:22-bookworm-slim AS runtime"]
    assert "USER 1000:1000" in text
    assert "NODE_ENV=production" in text and "PORT=4000" in text
    assert "HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3" in text
    assert "ARG " not in text and "SECRET" not in text


def test_server_env_quotes_every_value_literally():
    text = render(".env", app_name="x", env={"A": "pa$$ w'o\"rd \\ `x`", "B": "plain"})
    assert 'A="pa\\$\\$ w\'o\\"rd \\\\ `x`"' in text
    assert 'B="plain"' in text
    assert dotenv_quote("${HOME}") == '"\\${HOME}"'
