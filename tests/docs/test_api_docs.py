"""docs/api.md is generated from the protos (scripts/gen_api_docs) and must match them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_api_docs"

SAMPLE = """// A sample file: its first comment introduces it.
syntax = "proto3";

package sample.v1;

// How a thing is read.
enum Mode {
  FAST = 0;  // no barrier
  SAFE = 1;  // barrier | then read
}

// A request.
message Ask {
  string key = 1;          // which key
  optional uint64 at = 2;  // absent: now
  oneof how {
    Mode mode = 3;
    Inner inner = 4;
  }
  message Inner {
    repeated bytes parts = 1;
  }
}

message Answer {}

// ---- the service ----

service Things {
  // One key.
  rpc Get(Ask) returns (Answer);
  rpc Follow(stream Ask) returns (stream Answer);
}
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_docs_api_md_is_up_to_date_with_the_protos() -> None:
    done = _run("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_renders_services_messages_fields_enums_and_comments(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    (root / "sample" / "v1").mkdir(parents=True)
    (root / "sample" / "v1" / "sample.proto").write_text(SAMPLE)
    out = tmp_path / "api.md"
    assert _run("--proto-root", str(root), "--out", str(out)).returncode == 0
    text = out.read_text()
    assert "A sample file: its first comment introduces it." in text
    assert "| `Get` | [`Ask`](#ask) | [`Answer`](#answer) | One key. |" in text
    assert "| `Follow` | stream [`Ask`](#ask) | stream [`Answer`](#answer) |  |" in text
    assert "| `FAST` | 0 | no barrier |" in text
    assert "| `SAFE` | 1 | barrier \\| then read |" in text  # a pipe would end the cell
    assert "| `at` | 2 | `uint64` | optional (presence is tracked); absent: now |" in text
    assert "| `mode` | 3 | [`Mode`](#mode) | one of `how` |" in text
    assert "| `inner` | 4 | [`Ask.Inner`](#askinner) | one of `how` |" in text
    assert "### Ask.Inner" in text and "| `parts` | 1 | repeated `bytes` |  |" in text
    assert "> the service" in text


def test_check_fails_and_names_the_file_when_the_doc_is_stale(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    (root / "sample" / "v1").mkdir(parents=True)
    proto = root / "sample" / "v1" / "sample.proto"
    proto.write_text(SAMPLE)
    out = tmp_path / "api.md"
    assert _run("--proto-root", str(root), "--out", str(out)).returncode == 0
    assert _run("--proto-root", str(root), "--out", str(out), "--check").returncode == 0
    proto.write_text(SAMPLE.replace("string key = 1;          // which key", "string key = 1;  // which registry key"))
    stale = _run("--proto-root", str(root), "--out", str(out), "--check")
    assert stale.returncode == 1
    assert f"{out} is out of date" in stale.stderr
    assert "+| `key` | 1 | `string` | which registry key |" in stale.stdout
    assert "which registry key" not in out.read_text()  # --check never writes


def test_a_proto_that_does_not_compile_fails_without_writing(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    root.mkdir()
    (root / "bad.proto").write_text('syntax = "proto3";\nmessage Broken { strin key = 1; }\n')
    out = tmp_path / "api.md"
    done = _run("--proto-root", str(root), "--out", str(out))
    assert done.returncode != 0
    assert "protoc failed" in done.stderr
    assert not out.exists()


def test_missing_lists_every_element_without_a_comment_and_fails(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    (root / "sample" / "v1").mkdir(parents=True)
    (root / "sample" / "v1" / "sample.proto").write_text(SAMPLE)
    out = tmp_path / "api.md"
    done = _run("--proto-root", str(root), "--out", str(out), "--missing")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [  # in the order of the reference; a detached block is no comment
        "sample/v1/sample.proto:29: service sample.v1.Things has no comment",
        "sample/v1/sample.proto:32: rpc sample.v1.Things.Follow has no comment",
        "sample/v1/sample.proto:17: field sample.v1.Ask.mode has no comment",
        "sample/v1/sample.proto:18: field sample.v1.Ask.inner has no comment",
        "sample/v1/sample.proto:20: message sample.v1.Ask.Inner has no comment",
        "sample/v1/sample.proto:21: field sample.v1.Ask.Inner.parts has no comment",
        "sample/v1/sample.proto:25: message sample.v1.Answer has no comment",
    ]
    assert "6 elements" not in done.stderr and "7 elements" in done.stderr
    assert not out.exists()  # --missing never writes


def test_missing_passes_once_every_element_says_what_it_is(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    (root / "sample" / "v1").mkdir(parents=True)
    documented = (SAMPLE.replace("    Mode mode = 3;", "    Mode mode = 3;  // how")
                  .replace("    Inner inner = 4;", "    Inner inner = 4;  // nested")
                  .replace("  message Inner {", "  // Parts.\n  message Inner {")
                  .replace("repeated bytes parts = 1;", "repeated bytes parts = 1;  // in order")
                  .replace("message Answer {}", "// Empty.\nmessage Answer {}")
                  .replace("service Things {", "// Things.\nservice Things {")
                  .replace("  rpc Follow", "  // Every change.\n  rpc Follow"))
    (root / "sample" / "v1" / "sample.proto").write_text(documented)
    done = _run("--proto-root", str(root), "--out", str(tmp_path / "api.md"), "--missing")
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_every_element_of_the_protos_has_a_comment() -> None:
    done = _run("--missing")
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr
