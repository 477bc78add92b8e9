"""Put tswarm's datasource, folder, dashboards and alert rules into a running Grafana through its HTTP API.

``tswarm grafana provision`` calls :func:`provision`. It uses grafana-client and changes only what
differs: each object is read first and written only when it is missing or not what tswarm wants,
so a second run makes no writes. Dashboards are the ones of service/grafana_dashboards.py (the
same JSON docker-compose mounts from grafana/dashboards/); alert rules the ones of
service/grafana_alerts.py, through Grafana's alerting provisioning API (``/api/v1/provisioning/alert-rules``),
in the same folder.

What is compared:

- datasource (by uid): name, type, access, URL, user and the ``jsonData`` tswarm sets, and that each
  secret tswarm sets is stored (Grafana never returns secrets, so a changed secret alone is not
  seen: pass ``force=True``, ``--force`` on the command line);
- folder (by uid): its title;
- dashboard (by uid): the whole JSON (less Grafana's ``id`` and ``version``) and its folder;
- alert rule (by uid): every property tswarm sets (Grafana adds its own, such as ``id``, ``updated``
  and ``provenance``, and may add keys to a query's model: those are not compared).

No Grafana server runs on the test machines: tests/test_grafana_provision.py runs the command against
a recorded contract of these endpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError, GrafanaUnauthorizedError

from . import grafana_alerts, grafana_dashboards
from .influx import error_text

FOLDER_UID = "tswarm"
FOLDER_TITLE = "tswarm"
MESSAGE = "tswarm grafana provision"
TIMEOUT_S = 10.0
NOT_GRAFANA_HINT = "is --url Grafana's own address, with no login page in front?"
ADMIN_HINT = "check that --token is of a service account with the Admin role"


class ProvisionError(Exception):
    """Grafana could not be reached or refused a request; the message is one line for people."""


class _NotGrafana(Exception):
    """An answer Grafana's API never gives (each answer of the endpoints used here is a JSON object):
    something else answers at --url, such as the login page of a proxy in front of Grafana or an app
    that answers 200 to every path. The message says what came instead."""


@dataclass(frozen=True)
class InfluxSource:
    """How Grafana reaches InfluxDB (Grafana's view: the URL may differ from the service's)."""

    url: str
    api: str = "1"  # "1": InfluxDB 1.x; "2": InfluxDB 2.x (InfluxQL through v1 compatibility, or Flux)
    db: str = "tswarm"  # 1.x database
    bucket: str = "tswarm"  # 2.x bucket
    token: str = ""  # 2.x token
    org: str = ""  # 2.x organisation (Flux)
    user: str = ""  # 1.x user (optional)
    password: str = ""  # 1.x password (optional)
    flux: bool = False  # 2.x only: a Flux datasource and the Flux dashboards

    @property
    def language(self) -> str:
        return "flux" if self.flux else "influxql"


def datasource(source: InfluxSource) -> dict:
    """The datasource as Grafana's ``POST /api/datasources`` takes it."""
    parts = urlsplit(source.url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProvisionError(
            f"--influx-url must be InfluxDB's http(s) address as Grafana reaches it, like http://influxdb:8086;"
            f" got {source.url!r}"
        )
    if source.flux:
        if source.api != "2":
            raise ProvisionError("Flux needs InfluxDB 2.x: use --influx-api 2 (or drop --flux for InfluxQL)")
        return {
            "name": "tswarm Flux", "uid": grafana_dashboards.FLUX_UID, "type": "influxdb", "access": "proxy",
            "url": source.url,
            "jsonData": {"version": "Flux", "organization": source.org, "defaultBucket": source.bucket},
            "secureJsonData": {"token": source.token},
        }
    payload = {
        "name": "tswarm InfluxQL", "uid": grafana_dashboards.INFLUXQL_UID, "type": "influxdb", "access": "proxy",
        "url": source.url,
    }
    if source.api == "2":  # InfluxDB 2.x's v1-compatibility /query: database = bucket, token in a header
        payload["jsonData"] = {"dbName": source.bucket, "httpMode": "POST", "httpHeaderName1": "Authorization"}
        payload["secureJsonData"] = {"httpHeaderValue1": f"Token {source.token}"}
    else:
        payload["jsonData"] = {"dbName": source.db, "httpMode": "POST"}
        if source.user:
            payload["user"] = source.user
            payload["secureJsonData"] = {"password": source.password}
    return payload


def dashboards(source: InfluxSource, battery_low_v: float = grafana_dashboards.BATTERY_LOW_V) -> list[dict]:
    builders = (grafana_dashboards.overview, grafana_dashboards.node)
    return [build(source.language, bucket=source.bucket, battery_low_v=battery_low_v) for build in builders]


def alert_rules(source: InfluxSource, battery_low_v: float = grafana_dashboards.BATTERY_LOW_V) -> list[dict]:
    """The alert rules as ``POST /api/v1/provisioning/alert-rules`` takes them, in the folder of the dashboards."""
    return grafana_alerts.rules(source.language, bucket=source.bucket, folder_uid=FOLDER_UID, battery_low_v=battery_low_v)


def connect(url: str, token: str, timeout: float = TIMEOUT_S) -> GrafanaApi:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProvisionError(f"--url must be Grafana's http(s) address, like http://localhost:3000; got {url!r}")
    if parts.path.strip("/"):
        url = url.rstrip("/") + "/"  # Grafana under a sub-path: grafana-client appends "api"
    return GrafanaApi.from_url(url, credential=token, timeout=timeout)


def _kind(answer: object) -> str:
    """What an answer that is not a JSON object is, in a few words."""
    if isinstance(answer, str):
        return "an HTML page" if answer.lstrip().startswith("<") else "text"
    if answer is None:
        return "an empty answer"  # 204 No Content
    return "a JSON array" if isinstance(answer, list) else "JSON that is not an object"


def _object(answer: object) -> dict:
    """``answer`` when it is a JSON object; else :class:`_NotGrafana` (grafana-client hands over a
    text/* body as a string, and any JSON as it parses), before any code reads its fields."""
    if isinstance(answer, dict):
        return answer
    raise _NotGrafana(f"{_kind(answer)}, not a JSON object")


def _missing(call: Callable[[], object]) -> Optional[dict]:
    """The object, or None when Grafana answers 404."""
    try:
        return _object(call())
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _error_body(response: object) -> str:
    """An error answer that is not Grafana's JSON, on one line: an HTML page's title, else the text
    (as an InfluxDB error answer is said)."""
    return error_text(str(response or "")) or "an empty answer"


def _datasource_differs(existing: dict, wanted: dict) -> bool:
    for key in ("name", "type", "access", "url", "user"):
        if key in wanted and existing.get(key) != wanted[key]:
            return True
    existing_json = existing.get("jsonData") or {}
    if any(existing_json.get(k) != v for k, v in wanted.get("jsonData", {}).items()):
        return True
    stored = existing.get("secureJsonFields") or {}
    return not all(stored.get(k) for k in wanted.get("secureJsonData", {}))


def _without_grafana_fields(dashboard: dict) -> dict:
    return {k: v for k, v in dashboard.items() if k not in ("id", "version")}


RULE_OWN_FIELDS = ("orgID",)  # Grafana puts the token's organisation there, whatever was sent


def _covers(existing: object, wanted: object) -> bool:
    """Whether ``existing`` holds everything of ``wanted``: each key of a mapping (Grafana may add
    others), each item of a list, equal values (``1 == 1.0``: JSON numbers)."""
    if isinstance(wanted, dict):
        return isinstance(existing, dict) and all(k in existing and _covers(existing[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(existing, list) and len(existing) == len(wanted) and all(map(_covers, existing, wanted))
    return existing == wanted


def _rule_differs(existing: dict, wanted: dict) -> bool:
    for key, value in wanted.items():
        if key in RULE_OWN_FIELDS:
            continue
        if key in ("labels", "annotations"):  # whole maps: a label added by hand is not tswarm's rule
            if (existing.get(key) or {}) != value:
                return True
        elif not _covers(existing.get(key), value):
            return True
    return False


def provision(
    api: GrafanaApi, source: InfluxSource, force: bool = False, report: Callable[[str], None] = print,
    battery_low_v: float = grafana_dashboards.BATTERY_LOW_V,
) -> list[str]:
    """Create or update the datasource, the folder, the dashboards and the alert rules; returns what changed.

    ``battery_low_v`` (``TSWARM_BATTERY_LOW_V``) is the battery panels' threshold line and the low-battery
    rule's threshold. Raises :class:`ProvisionError` with a one-line message when Grafana is out of reach
    or refuses.
    """
    wanted_source = datasource(source)
    changed: list[str] = []

    def note(kind: str, name: str, action: str) -> None:
        report(f"{kind} {name!r}: {action}")
        if action != "unchanged":
            changed.append(f"{kind} {name}")

    try:
        uid = wanted_source["uid"]
        existing = _missing(lambda: api.datasource.get_datasource_by_uid(uid))
        if existing is None:
            _object(api.datasource.create_datasource(wanted_source))
            note("datasource", wanted_source["name"], "created")
        elif force or _datasource_differs(existing, wanted_source):
            _object(api.datasource.update_datasource_by_uid(uid, wanted_source))
            note("datasource", wanted_source["name"], "updated")
        else:
            note("datasource", wanted_source["name"], "unchanged")

        folder = _missing(lambda: api.folder.get_folder(FOLDER_UID))
        if folder is None:
            _object(api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID))
            note("folder", FOLDER_TITLE, "created")
        elif folder.get("title") != FOLDER_TITLE:
            _object(api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, version=folder.get("version")))
            note("folder", FOLDER_TITLE, "updated")
        else:
            note("folder", FOLDER_TITLE, "unchanged")

        for dashboard in dashboards(source, battery_low_v):
            current = _missing(lambda: api.dashboard.get_dashboard(dashboard["uid"]))
            same = (
                current is not None
                and _without_grafana_fields(current.get("dashboard", {})) == _without_grafana_fields(dashboard)
                and current.get("meta", {}).get("folderUid") == FOLDER_UID
            )
            if same and not force:
                note("dashboard", dashboard["title"], "unchanged")
                continue
            _object(api.dashboard.update_dashboard(
                {"dashboard": dashboard, "folderUid": FOLDER_UID, "overwrite": True, "message": MESSAGE}
            ))
            note("dashboard", dashboard["title"], "created" if current is None else "updated")

        alerting = api.alertingprovisioning
        for rule in alert_rules(source, battery_low_v):
            current = _missing(lambda: alerting.get_alertrule(rule["uid"]))
            if current is None:
                _object(alerting.create_alertrule(rule))
                note("alert rule", rule["title"], "created")
            elif force or _rule_differs(current, rule):
                _object(alerting.update_alertrule(rule["uid"], rule))
                note("alert rule", rule["title"], "updated")
            else:
                note("alert rule", rule["title"], "unchanged")
    except GrafanaUnauthorizedError:
        raise ProvisionError(f"Grafana at {api.url} refused the token (401 Unauthorized): check --token") from None
    except GrafanaTimeoutError:
        timeout = getattr(api.client, "timeout", TIMEOUT_S)
        raise ProvisionError(f"Grafana at {api.url} did not answer within {timeout:g} s") from None
    except GrafanaException as exc:
        if not exc.status_code:  # no answer at all (grafana-client's wrapping of niquests' errors)
            raise ProvisionError(f"cannot reach Grafana at {api.url}: {_one_line(_reason(exc))}") from None
        said = exc.response.get("message") if isinstance(exc.response, dict) else None
        hint = f" ({ADMIN_HINT})" if exc.status_code == 403 else ""
        if said:  # Grafana's own words ({"message": ...}), e.g. a rule provisioned from a file
            raise ProvisionError(f"Grafana at {api.url} answered {exc.status_code}: {_one_line(said)}{hint}") from None
        if not hint and exc.status_code < 500:  # a 4xx that is not Grafana's JSON: something else answers
            hint = f" ({NOT_GRAFANA_HINT})"
        raise ProvisionError(f"Grafana at {api.url} answered {exc.status_code}: {_error_body(exc.response)}{hint}") from None
    except _NotGrafana as exc:
        raise ProvisionError(f"Grafana at {api.url} did not answer as Grafana ({exc}: {NOT_GRAFANA_HINT})") from None
    except niquests.exceptions.JSONDecodeError:  # a RequestException too, but the server was reached
        raise ProvisionError(f"Grafana at {api.url} did not answer as Grafana (an answer that is not JSON: {NOT_GRAFANA_HINT})") from None
    except niquests.exceptions.RequestException as exc:
        raise ProvisionError(f"cannot reach Grafana at {api.url}: {_one_line(_reason(exc))}") from None
    return changed


def _reason(exc: Exception) -> str:
    """The innermost cause of a connection error ('Connection refused'), not the whole chain."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]
