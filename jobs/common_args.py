"""What every ``tagger`` subcommand shares: the strict parser, option types that check values as they are
parsed, destination checks that run before any work, and arguments defined once.

Every number a user can pass goes through one of the range-checked types below (a test walks every
subcommand and fails on a bare ``type=int``), so a new option is strict by construction: a bad value is one
line on stderr naming the option, exit status 2, before anything starts.
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from typing import Callable, Iterable, NoReturn

from models.registry import ENV_VAR, default_root
from schemas.errors import EXIT_USAGE, UserError


# ------------------------------------------------------------------------------------------ parser and help
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` for every option that has a meaningful default and ``(required)`` for required
    options; flags (store_true/false) and ``None`` defaults show nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and "(required)" not in text:
            text += " (required)"
        default = action.default
        if ("%(default)" in text or "default:" in text or default in (None, argparse.SUPPRESS, [], ())
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return text
        if action.option_strings:
            text += " (default: %(default)s)"
        return text


class TaggerArgumentParser(argparse.ArgumentParser):
    """argparse with the house conventions: no abbreviated options (``--inc`` is not ``--incremental``;
    abbreviations would also swallow Beam options as other branches add options), defaults shown in
    ``--help``, and usage errors as exactly one line on stderr with exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = _suggest_for_unrecognized(self, message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _suggest_for_unrecognized(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's own "unrecognized arguments: --x" gets the closest known option appended."""
    prefix = "unrecognized arguments: "
    if not message.startswith(prefix):
        return message
    first = message[len(prefix):].split()[0]
    hint = did_you_mean(first.split("=", 1)[0], option_strings(parser))
    return f"unknown option {first}{hint}" if first.startswith("-") else message


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """``" (did you mean --incremental?)"`` for the closest known option, or ``""``."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """``old`` still works, hidden from ``--help``, and says once on stderr that ``new`` replaces it."""

    class _Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)
            if isinstance(getattr(namespace, dest, None), list) and isinstance(values, list):
                values = getattr(namespace, dest) + values
            setattr(namespace, dest, values)

    parser.add_argument(old, dest=dest, action=_Deprecated, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                        **kwargs)


# ------------------------------------------------------------------------------------------- value types
def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(minimum: int, note: str = "") -> Callable[[str], int]:
    """An integer option type accepting ``minimum`` and above; ``note`` explains a special value (0 = auto)."""

    def parse(text: str) -> int:
        value = _number(int, text, "a whole number")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{note}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    parse.bad_values = tuple(v for v in (str(minimum - 1), "-3", "x", "1.5", "") if v)  # type: ignore[attr-defined]
    return parse


def float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
             ) -> Callable[[str], float]:
    """A float option type in [low, high] (either end may be open)."""

    def parse(text: str) -> float:
        value = _number(float, text, "a number")
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{low:g}, {high:g}{right}, got {text}")
        return value

    parse.__name__ = f"float in {low}..{high}"
    bad = ["-1", "nan", "x", "inf"]
    if low_open:
        bad.append(f"{low:g}")
    if high != math.inf:
        bad.append(f"{high * 2 + 1:g}")
    parse.bad_values = tuple(bad)  # type: ignore[attr-defined]
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
auto_or_positive_int = int_at_least(0, " (0 = automatic)")
positive_float = float_in(0, low_open=True)
fraction = float_in(0, 1)

def model_name(text: str) -> str:
    """A registry model name (schemas/model_refs.py: it becomes a directory name), checked before any work."""
    from schemas.model_refs import RefError, check_name

    try:
        return check_name(text)
    except RefError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


model_name.bad_values = ("", "a/b", "../x", "x@y", "Tagger")  # type: ignore[attr-defined]


def model_ref(text: str) -> str:
    """NAME, NAME@production or NAME@vN (schemas/model_refs.py)."""
    from schemas.model_refs import RefError, parse_ref

    try:
        parse_ref(text)
    except RefError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


model_ref.bad_values = ("", "@production", "a/b@v1", "x@", "x@v01")  # type: ignore[attr-defined]

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def kafka_name(text: str) -> str:
    """A Kafka topic or group name (Kafka's legal characters, 1-249 of them)."""
    if not _TOPIC_RE.match(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid Kafka topic/group name")
    return text


kafka_name.bad_values = ("", "a b", "x/y")  # type: ignore[attr-defined]


def bootstrap_servers(text: str) -> str:
    """``HOST:PORT[,HOST:PORT...]`` with ports 1-65535, checked as typed (no network)."""
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"{server.strip() or text!r} is not HOST:PORT with a port 1-65535")
    return text


bootstrap_servers.bad_values = ("kafka:notaport", "localhost:99999", "kafka", ":9092", "")  # type: ignore[attr-defined]


def existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text} {'is a directory' if os.path.isdir(text) else 'does not exist'}")
    return text


existing_file.bad_values = ("/nonexistent/x", "/")  # type: ignore[attr-defined]


def existing_dir(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} {'is a file' if os.path.exists(text) else 'does not exist'}"
                                         ", expected a directory")
    return text


existing_dir.bad_values = ("/nonexistent/x", "/etc/hostname")  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------- destinations
def check_output_dir(path: str, option: str) -> None:
    """Fail now, in one line, if ``path`` cannot become a directory we write into.

    Local paths only (object stores are checked by the job's first write): the path must be a directory or
    creatable under its nearest existing ancestor, which must be a writable directory. Nothing is created.
    """
    if "://" in path and not path.startswith("file://"):
        return
    path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UserError(f"{option} {path} is a file, not a directory")
        probe = path
    else:
        probe = os.path.dirname(path)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise UserError(f"{option} {path} cannot be created: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or _read_only_fs(probe):
        raise UserError(f"{option} {path} is not writable ({probe} is read-only or not ours)")


def _read_only_fs(path: str) -> bool:
    """Root passes ``os.access`` everywhere; read-only mounts (/proc, /sys, ro binds) still refuse writes."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY) or path.startswith(("/proc", "/sys"))
    except OSError:
        return True


# --------------------------------------------------------------------------------------- shared arguments
def add_registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=None,
        help=f"model registry root (local path or gs://, s3://...); default ${ENV_VAR}, "
        f"else ~/.local/share/tagger/registry",
    )


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "int8"), default="auto",
        help="which model file runs: auto = the INT8 variant on a CPU when the version has one (and it is "
        "faster here), FP32 on a GPU; fp32; int8 (fails if the version has none)",
    )


def registry_root(args: argparse.Namespace) -> str:
    return args.registry or default_root()


def add_progress_args(parser: argparse.ArgumentParser) -> None:
    """``--progress-interval`` / ``--no-progress``: see pipelines.progress.ProgressStyle and docs/cli.md."""
    parser.add_argument("--progress-interval", type=positive_float, default=None, metavar="SECONDS",
                        help="seconds between progress lines when output is not a terminal (default: 30; a "
                             "terminal gets one line redrawn every second)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress output at all (also: TAGGER_NO_PROGRESS=1); the final summary stays")


def progress_style(args: argparse.Namespace, stream=None):
    from pipelines.progress import ProgressStyle

    return ProgressStyle.choose(stream or sys.stderr, interval=getattr(args, "progress_interval", None),
                                enabled=not getattr(args, "no_progress", False))


# ------------------------------------------------------------------------------------------------- Kafka
KAFKA_PASSWORD_ENV = "TAGGER_KAFKA_PASSWORD"
_SECURITY_FLAGS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                   "ssl_cafile", "ssl_certfile", "ssl_keyfile")


def add_kafka_args(parser: argparse.ArgumentParser, required: bool = True, note: str = "") -> None:
    """Bootstrap servers and the security settings kafka-python needs; the SASL password may come from a
    file or ``$TAGGER_KAFKA_PASSWORD`` instead of the command line (visible in ``ps``)."""
    parser.add_argument("--bootstrap", type=bootstrap_servers, required=required, metavar="HOST:PORT[,...]",
                        help="Kafka bootstrap servers" + note)
    parser.add_argument("--security-protocol", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                        help="Kafka security protocol (default: PLAINTEXT)")
    parser.add_argument("--sasl-mechanism",
                        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"),
                        help="SASL mechanism")
    parser.add_argument("--sasl-plain-username", metavar="USER", help="SASL user name")
    password = parser.add_mutually_exclusive_group()
    password.add_argument("--sasl-plain-password-file", type=existing_file, metavar="FILE",
                          help=f"file holding the SASL password (first line); or set ${KAFKA_PASSWORD_ENV}")
    password.add_argument("--sasl-plain-password", metavar="PASSWORD",
                          help=f"SASL password on the command line (visible to other users in ps; prefer "
                               f"--sasl-plain-password-file or ${KAFKA_PASSWORD_ENV})")
    parser.add_argument("--ssl-cafile", type=existing_file, metavar="FILE", help="CA bundle (PEM)")
    parser.add_argument("--ssl-certfile", type=existing_file, metavar="FILE", help="client certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=existing_file, metavar="FILE", help="client private key (PEM)")
    parser.add_argument("--kafka-option", action="append", default=[], metavar="NAME=VALUE",
                        help="any other kafka-python security setting (repeatable), e.g. ssl_check_hostname=false")


def kafka_password(args: argparse.Namespace) -> str | None:
    """The SASL password: the flag, else the file's first line, else ``$TAGGER_KAFKA_PASSWORD``."""
    if getattr(args, "sasl_plain_password", None) is not None:
        return args.sasl_plain_password
    path = getattr(args, "sasl_plain_password_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--sasl-plain-password-file {path}: cannot read it ({exc})") from exc
    return os.environ.get(KAFKA_PASSWORD_ENV) or None


def kafka_config(args: argparse.Namespace):
    """A pipelines.streaming.kafka_config.KafkaConfig from the arguments of :func:`add_kafka_args`."""
    from pipelines.streaming.kafka_config import KafkaConfig, parse_security_options

    security = parse_security_options(getattr(args, "kafka_option", []))
    for key in _SECURITY_FLAGS:
        value = kafka_password(args) if key == "sasl_plain_password" else getattr(args, key, None)
        if value is not None:
            security[key] = value
    return KafkaConfig(args.bootstrap, security)


def check_kafka_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """One line within seconds when no bootstrap server accepts a TCP connection (unknown host, refused,
    timeout), instead of kafka-python retrying and logging for half a minute."""
    import socket

    servers = [s.strip() for s in bootstrap.split(",")]
    problems = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except socket.gaierror as exc:
            problem = f"unknown host {host} ({exc.strerror})"
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
        problems.append(problem if len(servers) == 1 else f"{server}: {problem}")
    raise UserError(f"cannot reach Kafka at {bootstrap}: {'; '.join(problems)}")
