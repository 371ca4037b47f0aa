"""`importer spec init`: drafts that load, guess right, and validate their own sample."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tomllib
from pathlib import Path

import pytest

from importer.cli import spec_draft
from importer.cli.main import main
from importer.transform.spec import load_spec


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    buf = io.StringIO()
    out = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    out.writerow(header)
    out.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def customers(n: int, rng: random.Random) -> tuple[list[str], list[list[str]]]:
    header = [
        "customer_id", "name", "email", "tier", "balance", "visits", "active",
        "joined", "last_seen", "prefs", "zip", "note",
    ]  # fmt: skip
    rows = []
    for i in range(n):
        rows.append(
            [
                f"C{i:05d}",
                f'Name {i}, "quoted"',
                f"u{i}@example.com" if i % 7 else "",
                rng.choice(["gold", "silver", "bronze"]),
                f"{rng.randint(-1000, 100000) / 100:.2f}",
                str(rng.randint(0, 500)),
                rng.choice(["yes", "no", "Y", "N"]),
                f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T0{rng.randint(0, 9)}:00:00+09:00",
                json.dumps({"lang": rng.choice(["en", "ja"]), "n": [i, i % 3]}),
                f"{rng.randint(0, 99999):05d}",
                rng.choice(["", "vip", "late payer", " spaced "]),
            ]
        )
    return header, rows


def validate(csv_path: Path, spec_path: Path, tmp_path: Path) -> dict:
    summary = tmp_path / f"{csv_path.name}.summary.json"
    code = main(
        ["validate", str(csv_path), "--spec", str(spec_path), "--summary-json", str(summary)]
        + ["--quiet"]
    )
    data = json.loads(summary.read_text())
    assert code == 0, data
    return data


def draft_to(csv_path: Path, tmp_path: Path, *extra: str) -> tuple[Path, dict]:
    out = tmp_path / f"{csv_path.name}.toml"
    assert main(["spec", "init", str(csv_path), "--out", str(out), *extra]) == 0
    load_spec(out)  # the draft is a valid spec as written
    return out, tomllib.loads(out.read_text(encoding="utf-8"))


def test_types_required_code_and_review_marks(tmp_path, capsys):
    header, rows = customers(300, random.Random(1))
    src = write_csv(tmp_path / "customers.csv", header, rows)
    out, doc = draft_to(src, tmp_path)
    assert doc["record"] == {"type": "CUSTOMERS", "code": "{customer_id}", "name": "{name}"}
    types = {name: body["type"] for name, body in doc["columns"].items()}
    assert types == {
        "customer_id": "string",
        "name": "string",
        "email": "string",
        "tier": "string",
        "balance": "decimal",
        "visits": "integer",
        "active": "boolean",
        "joined": "date",
        "last_seen": "datetime",
        "prefs": "json",
        "zip": "string",  # leading zeros: a number type would lose them
        "note": "string",
    }
    required = {name for name, body in doc["columns"].items() if body["required"]}
    assert required == set(header) - {"email", "note"}
    text = out.read_text()
    assert text.count("# review") >= 2 * len(header)
    assert '# enum = ["bronze", "gold", "silver"]' in text  # suggested, not enforced
    assert "empty in " in text and "of 300 sampled rows" in text
    err = capsys.readouterr().err
    assert "drafted " in err and "importer validate" in err
    data = validate(src, out, tmp_path)
    assert (data["rows"], data["rejected"]) == (300, 0)


@pytest.mark.parametrize("seed", range(6))
def test_generated_files_validate_their_sample_with_no_rejects(tmp_path, seed):
    """Random columns of every kind, odd names, several delimiters and compressions."""
    rng = random.Random(seed)
    n = rng.randint(1, 120)
    makers = {
        "int": lambda i: str(rng.randint(-(10**6), 10**6)),
        "dec": lambda i: f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 4)}f}",
        "bool": lambda i: rng.choice(["true", "False", "t", "no", "1", "0"]),
        "date": lambda i: f"2{rng.randint(0, 99):03d}/0{rng.randint(1, 9)}/1{rng.randint(0, 9)}",
        "dt": lambda i: f"2020-01-0{rng.randint(1, 9)} 1{rng.randint(0, 9)}:3{rng.randint(0, 9)}",
        "json": lambda i: json.dumps([i, {"k": rng.random()}]),
        "text": lambda i: rng.choice(["a", "b c", "ü", "x;y", 'q"q', "", " pad "]),
        "mixed": lambda i: rng.choice(["1", "2.5", "yes", "2024-01-01", "{}", "zz"]),
        "sparse": lambda i: "" if rng.random() < 0.3 else str(i),
        "zeros": lambda i: f"{rng.randint(0, 999):04d}",
        "huge": lambda i: "9" * rng.choice([5, 45]),
        "spaces": lambda i: rng.choice([" 1", "2 ", "  ", "3"]),
    }
    kinds = rng.sample(sorted(makers), k=rng.randint(3, len(makers)))
    names = [f"{k} col" if rng.random() < 0.3 else k for k in kinds]
    id_name = rng.choice(["id", "SKU", "item_code", "ref"])
    header = [id_name, *names]
    rows = [[f"K-{seed}-{i}", *(makers[k](i) for k in kinds)] for i in range(n)]
    delimiter = rng.choice([",", ";", "\t", "|"])
    suffix = rng.choice([".csv", ".csv.gz"])
    src = write_csv(tmp_path / f"data{seed}{suffix}", header, rows, delimiter)
    out, doc = draft_to(src, tmp_path)
    assert doc["record"]["code"] == "{" + id_name + "}"
    if delimiter != ",":
        assert doc["csv"]["delimiter"] != "COMMA"
    data = validate(src, out, tmp_path)
    assert (data["rows"], data["rejected"]) == (n, 0)


def test_sample_limits_the_rows_read_and_rows_beyond_it_may_disagree(tmp_path, capsys):
    rows = [[f"A{i}", str(i)] for i in range(50)] + [["Z", "not a number"]]
    src = write_csv(tmp_path / "late.csv", ["code", "qty"], rows)
    out, doc = draft_to(src, tmp_path, "--sample", "50", "--type", "ITEM")
    assert doc["record"]["type"] == "ITEM"
    assert doc["columns"]["qty"]["type"] == "integer"
    assert "first 50 rows" in out.read_text()
    assert main(["validate", str(src), "--spec", str(out), "--quiet"]) == 3


def test_a_guess_that_would_reject_the_sample_is_weakened(tmp_path, monkeypatch):
    """The self-check: a wrong guess (forced here) never reaches the file."""
    real = spec_draft.guess_column

    def wrong(name, values):
        guess = real(name, values)
        if name == "qty":
            guess.type, guess.required = "date", True
        return guess

    monkeypatch.setattr(spec_draft, "guess_column", wrong)
    src = write_csv(tmp_path / "w.csv", ["code", "qty"], [["A", "1"], ["B", ""]])
    draft = spec_draft.draft_spec(str(src))
    qty = draft.spec.column("qty")
    assert (qty.type, qty.required) == ("string", False)
    assert draft.rejects == 0
    assert "a sampled value was not a date" in draft.text


def test_no_unique_column_says_so_in_the_review_note(tmp_path):
    src = write_csv(tmp_path / "d.csv", ["kind", "n"], [["a", "1"], ["a", "1"]])
    draft = spec_draft.draft_spec(str(src))
    assert "no column is unique in the sample" in draft.text
    assert draft.rejects == 1  # the duplicate the user must resolve by picking the code


def test_s3_source(tmp_path, aws):
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="in-bucket")
    s3.put_object(Bucket="in-bucket", Key="x/p.csv", Body=b"sku,price\nA,1.5\nB,2\n")
    draft = spec_draft.draft_spec("s3://in-bucket/x/p.csv")
    assert draft.spec.column("price").type == "decimal"
    assert draft.spec.record.type.source == "P"
    assert draft.spec.record.code.source == "{sku}"


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["spec", "init", str(tmp_path / "missing.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("importer spec init: error: ") and err.count("\n") == 1
    src = write_csv(tmp_path / "a.csv", ["code"], [["x"]])
    (tmp_path / "taken.toml").write_text("keep me")
    assert main(["spec", "init", str(src), "--out", str(tmp_path / "taken.toml")]) == 1
    assert "exists (add --force" in capsys.readouterr().err
    assert (tmp_path / "taken.toml").read_text() == "keep me"
    assert main(["spec", "init", str(src), "--out", str(tmp_path / "taken.toml"), "--force"]) == 0
    (tmp_path / "empty.csv").write_bytes(b"")
    assert main(["spec", "init", str(tmp_path / "empty.csv")]) == 1
    assert "no header row" in capsys.readouterr().err
    assert main(["spec", "init", str(src)]) == 0  # no --out: the draft on stdout
    assert capsys.readouterr().out.startswith("# Draft import spec for ")


def test_numbers_an_mbc_application_cannot_read_are_drafted_as_text():
    big = spec_draft.guess_column("id", ["1", "12345678901234567890", "7"])
    assert big.type == "string" and "MBC application" in big.why
    long_decimal = spec_draft.guess_column("rate", ["0.5", "1.234567890123456789"])
    assert long_decimal.type == "string"
    nested = spec_draft.guess_column("doc", ['{"a": 1}', '{"b": [9007199254740993]}'])
    assert nested.type == "string" and nested.why.startswith("JSON holding")
    fine = spec_draft.guess_column("price", ["19.99", "9007199254740991"])
    assert fine.type == "decimal"
    assert spec_draft.guess_column("doc", ['{"a": 1.5}']).type == "json"
