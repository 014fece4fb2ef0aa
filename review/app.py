"""The review page: a Flask app over one queue, served by waitress (``tagger review serve``).

Routes (all under one origin, no third-party assets, so it works offline):

    GET  /                 the page (static/review.html, review.js, review.css)
    GET  /api/queue        the queue's items, the model's classes and what is already reviewed
    GET  /image/<index>    the image of item <index>, decoded and re-encoded as JPEG
    POST /api/submit       one decision -> correction records -> the sink (inbox file or Kafka topic)

Images are addressed only by their index in the queue, never by a path, so nothing outside the queue's own URIs
can be requested. Every image is decoded with the pipelines' decoder and re-encoded before it is sent: the browser
only ever receives a JPEG this process made (no content sniffing of archive bytes, TIFF/CMYK shown too).
When a token is set (required when listening beyond localhost) every route needs it: ``/?token=T`` once sets a
cookie, or send ``X-Review-Token``. On localhost the Host header must name localhost (no DNS rebinding).
"""
from __future__ import annotations

import datetime as dt
import functools
import hmac
import io
import json
import logging
import os
import stat
import threading

from flask import Flask, Response, abort, g, jsonify, request, send_from_directory

from models import storage
from review.corrections import DecisionError, clean_tags, decision_records
from review.queue_file import Queue
from review.sinks import Sink, SinkError
from schemas.errors import UserError

log = logging.getLogger(__name__)
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "tagger_review_token"
MAX_IMAGE_BYTES = 200 * 1024 * 1024
DISPLAY_SIDE = 1600
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


class ProgressLog:
    """Which items were submitted, kept beside the queue (``QUEUE.progress.json``) so a restart resumes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: dict[str, dict] = {}
        if os.path.exists(path):
            try:
                with open(path) as fh:
                    loaded = json.load(fh)
                self.done = {str(k): v for k, v in loaded.get("done", {}).items()}
            except (OSError, ValueError, AttributeError) as exc:
                raise UserError(f"{path}: unreadable review progress file ({exc}); move it away to start over")

    def mark(self, index: int, entry: dict) -> None:
        self.done[str(index)] = entry
        storage.write_bytes_atomic(self.path, json.dumps({"done": self.done}, indent=1, sort_keys=True).encode())


def create_app(queue: Queue, sink: Sink, progress: ProgressLog, *, annotator: str, token: str | None = None,
               loopback_only: bool = True, source: str = "review-ui") -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    lock = threading.Lock()
    classes = list(queue.classes)

    @app.before_request
    def guard():
        if loopback_only and request.host.rsplit(":", 1)[0] not in LOOPBACK_HOSTS:
            abort(403, "this review page only answers to localhost")
        if token is None:
            return None
        given = request.cookies.get(COOKIE) or request.headers.get("X-Review-Token") or request.args.get("token")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            abort(401, "a valid review token is required (open the URL printed by tagger review serve)")
        g.token_ok = True
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if token is not None and request.args.get("token") and g.get("token_ok"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    @app.errorhandler(400)
    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(413)
    @app.errorhandler(415)
    def error(exc):
        return jsonify(error=getattr(exc, "description", str(exc))), exc.code

    @app.get("/")
    def page():
        return send_from_directory(STATIC, "review.html")

    @app.get("/static/<name>")
    def static_file(name: str):
        if name not in ("review.js", "review.css"):
            abort(404)
        return send_from_directory(STATIC, name)

    @app.get("/api/queue")
    def queue_json():
        return jsonify(
            strategy=queue.strategy, model=f"{queue.model_name}@{queue.model_version}", classes=classes,
            thresholds=queue.thresholds, annotator=annotator,
            items=[{"index": i, "image_uri": it.image_uri, "tags": list(it.tags), "probabilities": it.probabilities,
                    "reason": it.reason, "reviewed": str(i) in progress.done}
                   for i, it in enumerate(queue.items)],
        )

    @app.get("/image/<int:index>")
    def image(index: int):
        if not 0 <= index < len(queue.items):
            abort(404, f"no item {index} in this queue")
        try:
            body = _display_jpeg(queue.items[index].image_uri)
        except (OSError, ValueError) as exc:
            return jsonify(error=f"cannot display {queue.items[index].image_uri}: {exc}"), 422
        return Response(body, mimetype="image/jpeg")

    @app.post("/api/submit")
    def submit():
        if not request.is_json:
            abort(415, "send the decision as application/json")
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            abort(400, "the decision must be a JSON object")
        index = payload.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(queue.items):
            abort(400, "index must name an item of this queue")
        try:
            tags = clean_tags(payload.get("tags") or [])
            new = set(clean_tags(payload.get("new_classes") or []))
            unknown = [t for t in tags if t not in set(classes) and t not in new]
            if unknown:
                raise DecisionError(f"{', '.join(unknown)} is not a class of {queue.model_name}@"
                                    f"{queue.model_version}; add it explicitly as a new class")
            comment = payload.get("comment")
            names = clean_tags([payload.get("annotator") or annotator])  # same rules as a tag: printable, short
            records = decision_records(
                queue.items[index], tags, classes, annotator=names[0],
                source=source, reviewed_at=dt.datetime.now(dt.timezone.utc),
                comment=comment.strip()[:2000] if isinstance(comment, str) else None)
        except DecisionError as exc:
            abort(400, str(exc))
        with lock:
            try:
                where = sink.write(records)
            except SinkError as exc:
                return jsonify(error=str(exc)), 503
            progress.mark(index, {"at": records[0]["reviewed_at"] if records else None, "records": len(records),
                                  "annotator": records[0]["annotator"] if records else None})
        log.info("item %d: %d correction records -> %s", index, len(records), where)
        return jsonify(written=len(records), where=os.path.basename(where), records=records)

    return app


@functools.lru_cache(maxsize=64)
def _display_jpeg(uri: str) -> bytes:
    """The image as the pipelines decode it (orientation, mode), scaled to fit DISPLAY_SIDE, as JPEG."""
    from pipelines.decode import DecodeError, decode_image

    if storage.is_local(uri):  # a hand-edited queue may name a FIFO or a device: never block on or slurp one
        info = os.stat(uri[7:] if uri.startswith("file://") else uri)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"file larger than {MAX_IMAGE_BYTES >> 20} MB")
    data = storage.read_bytes(uri)
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"file larger than {MAX_IMAGE_BYTES >> 20} MB")
    try:
        img = decode_image(data, draft_size=(DISPLAY_SIDE, DISPLAY_SIDE)).image
    except DecodeError as exc:
        raise ValueError(f"{exc.reason}: {exc}") from exc
    img.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=88)
    return out.getvalue()
