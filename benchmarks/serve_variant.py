"""The shipped service with one journal knob changed, for side-by-side benchmarks.

--synchronous OFF   : durability off (the ceiling)
--max-batch 1       : one commit per request (the naive design)
--workers N         : N processes sharing the port, as `tswarm serve --workers N` runs them
--database-url URL  : the journal in PostgreSQL (TSWARM_DATABASE_URL) instead of SQLite in the data dir
--shell             : tswarm's app as shipped (its middleware, request handler, routes, journal), but
                      the node route answers 202 at once after reading the body, as the bare handler of
                      ceilings.py does: no login, no JSON, no commit. What no handler inside tswarm's
                      app can beat: the most the ingest target leaves room for.
--no-commit         : the shipped service, but the journal's writer answers every reading at once
                      with the time of now and stores nothing: the whole handler (login, JSON,
                      answer) without the commit and its writer thread, to tell the two apart.
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tswarm.settings import Config  # noqa: E402
from tswarm.workers import serve  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--data-dir", type=Path, required=True)
parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "OFF"])
parser.add_argument("--max-batch", type=int, default=5000)
parser.add_argument("--workers", type=int, default=1)
parser.add_argument("--database-url", default=None)
parser.add_argument("--shell", action="store_true")
parser.add_argument("--no-commit", action="store_true")
args = parser.parse_args()
if args.no_commit:
    import time

    from tswarm.storage import group

    async def answer_at_once(self, *args, **kwargs) -> int:  # stores nothing: measurement only
        return time.time_ns()

    group.GroupCommitWriter.append = answer_at_once
if args.shell:
    from aiohttp import web

    from tswarm import protocol

    async def answer_at_once(request: web.Request) -> web.Response:  # ceilings.py's bare handler
        await request.read()
        return web.Response(status=202, body=b'{"stored": true}', content_type="application/json")

    protocol.node_reading = answer_at_once  # setup_routes (in create_app) routes PUT/POST to it
config = Config.from_env(
    host="127.0.0.1", port=args.port, data_dir=args.data_dir, workers=args.workers, database_url=args.database_url,
    journal_synchronous=args.synchronous, journal_max_batch=args.max_batch,
)
# as `tswarm serve` does (service/cli.py): the same log lines at the same level (TSWARM_LOG_LEVEL)
logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
sys.exit(serve(config))  # the code path of `tswarm serve`
