"""Security invariants of the code itself: nothing is ever unpickled from a tracking server,
and secret-looking config keys and URI credentials are redacted wherever configs go."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tsp_mlflow.tracking.params import REDACTED, flatten, redact, redact_overrides

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("tsp_mlflow/**/*.py"), *ROOT.glob("analysis/**/*.py")])

# (module, function) pairs that deserialize code or arbitrary objects.
BANNED = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("dill", "load"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("pytorch", "load_model"),
    ("jit", "load"),
    ("builtins", "eval"),
    ("builtins", "exec"),
}


def calls(path: Path) -> list[tuple[str, str, ast.Call]]:
    """(receiver, attribute, node) of each ``a.b(...)`` call; bare ``eval``/``exec`` too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver = func.value
            name = (
                receiver.attr
                if isinstance(receiver, ast.Attribute)
                else getattr(receiver, "id", "")
            )
            found.append((name, func.attr, node))
        elif isinstance(func, ast.Name) and func.id in ("eval", "exec"):
            found.append(("builtins", func.id, node))
    return found


def keyword(node: ast.Call, name: str) -> object:
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_the_sources_were_found() -> None:
    assert len(SOURCES) > 40 and any(p.name == "serialization.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_deserializes_code_or_pickles(path: Path) -> None:
    for receiver, attr, node in calls(path):
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        assert (receiver, attr) not in BANNED, f"{where}: {receiver}.{attr} can run code"
        if (receiver, attr) == ("torch", "load"):
            assert keyword(node, "weights_only") is True, (
                f"{where}: torch.load needs weights_only=True"
            )
        if (receiver, attr) == ("np", "load"):
            assert keyword(node, "allow_pickle") is False, (
                f"{where}: np.load needs allow_pickle=False"
            )
        if attr == "from_pretrained" and receiver.startswith("AutoModel"):
            assert keyword(node, "use_safetensors") is True, f"{where}: safetensors only"


def test_the_only_unpickler_is_the_restricted_one_for_local_data() -> None:
    subclasses = [
        (path.relative_to(ROOT), node)
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any("Unpickler" in ast.unparse(base) for base in node.bases)
    ]
    assert [(str(p), n.name) for p, n in subclasses] == [
        ("tsp_mlflow/data/mosi.py", "SafeUnpickler")
    ]
    (_, unpickler) = subclasses[0]
    assert "find_class" in {f.name for f in unpickler.body if isinstance(f, ast.FunctionDef)}


SECRETS = {
    "password": "pw-1",
    "db_password": "pw-2",
    "api_token": "tok-3",
    "client-secret": "sec-4",
    "access_key": "key-5",
    "key": "key-6",
    "credentials": "cred-7",
    "passwd": "pw-8",
    "pw": "pw-11",
    "pwd": "pw-12",
    "auth": "auth-13",
    "basic_auth": "auth-14",
    "passphrase": "pw-15",
    "session_cookie": "ck-16",
}
NOT_SECRETS = {
    "tokenizer": "wordpiece",
    "max_tokens": 512,
    "keys": "a,b",
    "monitor": "accuracy",
    "bypass": 1,
    "author": "ada",
    "pwm": 3,
    "authority": "x",
}


def test_secret_keys_and_uri_credentials_are_redacted_everywhere() -> None:
    config = {
        "tracking": {**SECRETS, "store": "postgresql://alice:uri-pw-9@db:5432/mlflow"},
        "model": NOT_SECRETS,
        "hosts": ["https://bob:uri-pw-10@example.org/x"],
    }
    flat = flatten(config)
    shown = str(flat) + str(redact(config))
    for value in [*SECRETS.values(), "uri-pw-9", "uri-pw-10", "alice", "bob"]:
        assert value not in shown
    assert all(flat[f"tracking.{k}"] == REDACTED for k in SECRETS)
    assert flat["tracking.store"] == "postgresql://***@db:5432/mlflow"
    assert flat["model.tokenizer"] == "wordpiece" and flat["model.max_tokens"] == "512"
    assert flat["model.keys"] == "a,b" and flat["model.bypass"] == "1"
    assert flat["model.author"] == "ada" and flat["model.pwm"] == "3"
    assert redact_overrides(["+tracking.api_token=x", "storage=postgresql://u:p@h/d", "a=1"]) == [
        "+tracking.api_token=***",
        "storage=postgresql://***@h/d",
        "a=1",
    ]
