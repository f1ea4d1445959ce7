"""The README's "From the terminal" example, run as written against a real stack.

The commands are read from README.md itself (the ```bash block after the
``readme-example:terminal`` marker), so the test fails as soon as the README drifts from
what the CLI does. Each line runs in order through the installed ``framebus`` command with
the session's real Kafka broker and S3 server, under a topic prefix and bucket of this
test's own. As the README says, the scheduler and a worker run beside them: here the real
scheduler and the null test engine (the whole worker protocol, without diffusion).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from framebus.infra.process import terminate
from framebus.schemas.events import GenerationFields
from framebus.services.common.children import child_env, launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack

README = Path(__file__).parents[1] / "README.md"
MARKER = "<!-- readme-example:terminal"
FRAMEBUS = Path(sys.executable).with_name("framebus")  # the console script `pip install` puts on PATH
COMMAND_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 60.0  # how long a `status` may take to show a state the scheduler is about to write


def readme_commands(text: str) -> list[list[str]]:
    """The shell lines of the marked example, continuations joined and comments dropped, as argv lists."""
    start = text.find(MARKER)
    assert start >= 0, f"README.md has no {MARKER} ...--> marker before its terminal example"
    block = re.search(r"```(?:bash|sh|shell)\n(.*?)\n```", text[start:], flags=re.S)
    assert block, "no ```bash block follows the terminal example's marker"
    joined = block.group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in joined.splitlines()]
    return [argv for argv in commands if argv]


def options(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """Positional arguments and ``--name value`` / ``--flag`` options of one command line."""
    positional: list[str] = []
    found: dict[str, str | bool] = {}
    rest = iter(range(len(args)))
    for index in rest:
        arg = args[index]
        if not arg.startswith("--"):
            positional.append(arg)
        elif index + 1 < len(args) and not args[index + 1].startswith("--") and arg not in ("--wait", "--with-key"):
            found[arg[2:]] = args[index + 1]
            next(rest)
        else:
            found[arg[2:]] = True
    return positional, found


def resolved(prompt: str, opts: dict[str, str | bool], env: dict[str, str]) -> str:
    """What these CLI options resolve to (the model's own defaults filling what is left out) and
    the tokens the contract quotes for it, as the CLI prints them."""
    given = {"model": opts.get("model"), "num_frames": opts.get("frames"), "width": opts.get("width"),
             "height": opts.get("height"), "num_inference_steps": opts.get("steps")}
    fields = GenerationFields.model_validate(
        {"prompt": prompt, **{k: v for k, v in given.items() if v is not None}},
        context={"default_model": env.get("FRAMEBUS_DEFAULT_MODEL")})
    return (f"{fields.model} {fields.width}x{fields.height}, {fields.num_frames} frames, "
            f"{fields.num_inference_steps} steps", f"{fields.quote():g} tokens")


@dataclass
class Terminal:
    """A user's shell: an environment that `export` lines change, and what the user expects to see."""

    env: dict[str, str]
    services: dict[str, tuple[subprocess.Popen, Path]]  # what runs "in the other terminals", and its log
    outcomes: dict[str, str] = field(default_factory=dict)  # request id -> the state it should reach
    ran: list[str] = field(default_factory=list)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.assert_services_run()
        try:
            done = subprocess.run([str(FRAMEBUS), *argv[1:]], capture_output=True, text=True, env=self.env,
                                  timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{shlex.join(argv)}` did not end in {COMMAND_TIMEOUT_S:g}s\n{self.service_logs()}")
        self.ran.append(argv[1])
        return done

    def assert_services_run(self) -> None:
        stopped = [name for name, (process, _) in self.services.items() if process.poll() is not None]
        assert not stopped, f"{', '.join(stopped)} stopped before the example ended\n{self.service_logs()}"

    def service_logs(self) -> str:
        return "\n".join(f"--- {name} log:\n{log.read_text(errors='replace')[-1500:]}"
                         for name, (_, log) in self.services.items())

    def check(self, argv: list[str]) -> None:
        line = shlex.join(argv)
        if argv[0] == "export":
            for assignment in argv[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
            return
        assert argv[0] == "framebus", f"the example may run only `framebus` commands and `export`: {line}"
        positional, opts = options(argv[1:])
        command = " ".join(positional[:2]) if positional[0] == "tenants" else positional[0]
        checker = getattr(self, "_" + command.replace(" ", "_"), None)
        assert checker is not None, f"this test does not know what `{line}` should print: add a check for it"
        checker(line, argv, positional, opts)

    def _ok(self, line: str, argv: list[str]) -> str:
        """Run the command; the user sees exit code 0 and no traceback."""
        done = self.run(argv)
        shown = done.stdout + done.stderr
        assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{shown}\n{self.service_logs()}"
        assert "Traceback" not in shown, f"`{line}` printed a traceback:\n{shown}"
        return done.stdout

    def _tenants_create(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        out = self._ok(line, argv)
        assert f"created tenant {positional[2]}" in out, out
        if opts.get("with-key"):
            assert re.search(r"\bfb_\S+", out), f"`{line}` printed no API key:\n{out}"

    def _tenants_credit(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        out = self._ok(line, argv)
        assert f"credited {float(positional[3]):g} tokens to {positional[2]}" in out, out

    def _quote(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        out = self._ok(line, argv)
        what, tokens = resolved(positional[1], opts, self.env)
        assert out.strip() == f"{tokens} ({what})", out

    def _submit(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        out = self._ok(line, argv)
        request_id = opts.get("id") or re.search(r"accepted (\S+) for", out).group(1)
        tier = opts.get("tier", "standard")
        what, tokens = resolved(positional[1], opts, self.env)
        tenant = opts.get("tenant") or self.env.get("FRAMEBUS_TENANT", "demo")
        assert f"accepted {request_id} for {tenant} ({tier}): {what}: {tokens}" in out, out
        if opts.get("wait"):
            self._assert_completed(line, request_id, out)
            self.outcomes[request_id] = "completed"

    def _status(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        request_id = positional[1]
        wanted = self.outcomes.get(request_id)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            out = self._ok(line, argv)
            state = re.search(rf"^{re.escape(request_id)}: (\w+) \(tier \w+, ([\d.]+|\?) tokens", out, flags=re.M)
            assert state, f"`{line}` printed no state line:\n{out}"
            if wanted is None or state.group(1) == wanted or time.monotonic() > deadline:
                break
            time.sleep(1.0)  # the user looks again: the scheduler has not written the new state yet
        assert wanted is None or state.group(1) == wanted, f"`{line}` still shows {state.group(1)}, not {wanted}"
        if wanted == "completed":
            self._assert_completed(line, request_id, out)

    def _cancel(self, line: str, argv: list[str], positional: list[str], opts: dict) -> None:
        out = self._ok(line, argv)
        assert re.search(rf"cancel requested for {re.escape(positional[1])} \(was (accepted|queued)\)", out), out
        self.outcomes[positional[1]] = "cancelled"

    @staticmethod
    def _assert_completed(line: str, request_id: str, out: str) -> None:
        assert re.search(rf"^{re.escape(request_id)}: completed \(", out, flags=re.M), out
        url = re.search(r"^video: (\S+)$", out, flags=re.M)
        assert url, f"`{line}` printed no video URL:\n{out}"
        video = httpx.get(url.group(1), timeout=30)  # the presigned link works for anyone holding it
        assert video.status_code == 200 and video.content[4:8] == b"ftyp", f"{url.group(1)} is not an MP4"


@dataclass(frozen=True)
class DemoStack:
    settings: Settings
    services: dict[str, tuple[subprocess.Popen, Path]]


@pytest.fixture
def stack(server_settings: Settings, tmp_path: Path) -> Iterator[DemoStack]:
    """The stack as the README's example expects it: topics and bucket, the scheduler and a worker running."""
    settings = server_settings.model_copy(update={"topic_prefix": f"readme.{uuid.uuid4().hex[:8]}.",
                                                  "s3_bucket": f"readme-{uuid.uuid4().hex[:8]}"})
    Stack(settings).up()
    commands = {"scheduler": ["scheduler"],
                "worker": ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", f"readme-{uuid.uuid4().hex[:6]}",
                           "--heartbeat-s", "0.5"]}
    services = {}
    try:
        for name, args in commands.items():
            log = tmp_path / f"{name}.log"
            services[name] = (launch(settings, args, log), log)
        yield DemoStack(settings, services)
    finally:
        for process, _ in services.values():
            terminate(process.pid, timeout_s=15)


def test_the_terminal_example_is_what_a_user_sees(stack: DemoStack) -> None:
    commands = readme_commands(README.read_text())
    terminal = Terminal(env=child_env(stack.settings, COLUMNS="200"), services=stack.services)
    for argv in commands:
        terminal.check(argv)
    # The example keeps showing the whole round trip, not only whatever lines are left in it.
    assert {"tenants", "quote", "submit", "status", "cancel"} <= set(terminal.ran), terminal.ran
    assert "completed" in terminal.outcomes.values() and "cancelled" in terminal.outcomes.values(), terminal.outcomes


def test_the_example_parser_reads_continuations_comments_and_quotes() -> None:
    text = ('<!-- readme-example:terminal -->\n```bash\nexport A=b   # set\n'
            'framebus submit "a fox  # not a comment" \\\n    --id x --wait  # here\n\n```\n')
    assert readme_commands(text) == [["export", "A=b"], ["framebus", "submit", "a fox  # not a comment", "--id", "x",
                                                         "--wait"]]
    assert options(["submit", "a fox", "--id", "x", "--wait", "--frames", "17"]) == (
        ["submit", "a fox"], {"id": "x", "wait": True, "frames": "17"})
