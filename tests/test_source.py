"""ItemReader CSV rules (docs/aws-facts.md, ItemReader), case by case, and source opening."""

from __future__ import annotations

import gzip
import io

import pytest

from importer.input.options import CsvOptions
from importer.input.source import CsvReader, SourceError, iter_records, open_source


def rows(data: bytes, delimiter: str = ",") -> list[tuple[int, list[str], str | None]]:
    return [(r.line, r.fields, r.error) for r in iter_records(io.BytesIO(data), delimiter)]


def read(data: bytes, **opts) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = CsvReader(io.BytesIO(data), CsvOptions(**opts))
    return reader.header, [(r.line, r.fields) for r in reader]


def test_plain_rows_with_line_numbers():
    assert rows(b"a,b\n1,2\n3,4\n") == [
        (1, ["a", "b"], None),
        (2, ["1", "2"], None),
        (3, ["3", "4"], None),
    ]


def test_doubled_quote_escapes_a_quote():
    assert rows(b'"say ""hi""",x\n')[0][1] == ['say "hi"', "x"]


def test_quoted_delimiter_and_newlines_are_data():
    got = rows(b'a,b\n"1,5","two\nlines"\n3,4\n')
    assert got[1] == (2, ["1,5", "two\nlines"], None)
    assert got[2] == (4, ["3", "4"], None)  # line number counts physical lines


def test_crlf_inside_quotes_is_kept_and_crlf_ends_rows():
    got = rows(b'a,b\r\n"x\r\ny",z\r\n')
    assert got == [(1, ["a", "b"], None), (2, ["x\r\ny", "z"], None)]


def test_lone_cr_ends_a_row():
    assert rows(b"a,b\r1,2\r") == [(1, ["a", "b"], None), (2, ["1", "2"], None)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb"a\\b", "a\\b"),  # backslash escapes a backslash
        (rb"a\"b", 'a"b'),  # ... a quote
        (rb"a\,b", "a,b"),  # ... the delimiter
        (rb"a\nb", "anb"),  # before any other character the backslash is dropped
        (rb"\x", "x"),
        (rb'"in \"quotes\""', 'in "quotes"'),
        (rb'"q\,d"', "q,d"),
        (rb"end\\", "end\\"),
    ],
)
def test_backslash_rules(raw, expected):
    assert rows(raw + b"\n")[0][1] == [expected]


def test_backslash_escapes_only_the_configured_delimiter():
    assert rows(rb"a\|b|c" + b"\n", "|")[0][1] == ["a|b", "c"]
    assert rows(rb"a\,b|c" + b"\n", "|")[0][1] == ["a,b", "c"]


@pytest.mark.parametrize(
    ("name", "char"),
    [("PIPE", "|"), ("SEMICOLON", ";"), ("SPACE", " "), ("TAB", "\t"), ("COMMA", ",")],
)
def test_every_itemreader_delimiter(name, char):
    from importer.input.options import DELIMITERS

    assert DELIMITERS[name] == char
    data = f"a{char}b\n1{char}2\n".encode()
    assert read(data, delimiter=char) == (["a", "b"], [(2, ["1", "2"])])


def test_short_rows_are_padded_and_long_rows_truncated():
    reader = CsvReader(io.BytesIO(b"a,b,c\n1\n1,2,3,4,5\n"), CsvOptions())
    got = [(r.line, r.fields) for r in reader]
    assert got == [(2, ["1", "", ""]), (3, ["1", "2", "3"])]
    assert (reader.padded, reader.truncated) == (1, 1)


def test_given_header_treats_first_row_as_data():
    header, data = read(b"1,2\n3,4\n", header_location="GIVEN", headers=("x", "y"))
    assert header == ["x", "y"]
    assert data == [(1, ["1", "2"]), (2, ["3", "4"])]


def test_blank_lines_are_skipped_and_bom_stripped():
    header, data = read(b"\xef\xbb\xbfa,b\n\n1,2\n\n")
    assert header == ["a", "b"]
    assert data == [(3, ["1", "2"])]


def test_quote_inside_unquoted_field_is_literal():
    assert rows(b'ab"c,d\n')[0][1] == ['ab"c', "d"]


def test_text_after_closing_quote_is_kept():
    assert rows(b'"ab"c,d\n')[0][1] == ["abc", "d"]


def test_unterminated_quote_is_an_error_row_naming_its_line():
    got = rows(b'a,b\n1,"open\n2,3\n')
    assert got[1][0] == 2
    assert "unterminated quoted field" in got[1][2]


def test_invalid_utf8_is_an_error_row_not_a_crash():
    got = rows(b"a,b\n\xff\xfe,2\nok,3\n")
    assert got[1][0] == 2 and "invalid UTF-8" in got[1][2]
    assert got[2] == (3, ["ok", "3"], None)


def test_no_trailing_newline_and_chunk_boundaries(monkeypatch):
    import importer.input.source as source

    monkeypatch.setattr(source, "CHUNK_BYTES", 3)
    data = b'a,b\r\n"x\r\ny",z\r\n1,2'
    assert rows(data) == [(1, ["a", "b"], None), (2, ["x\r\ny", "z"], None), (4, ["1", "2"], None)]


def test_empty_file_and_duplicate_header_are_errors():
    with pytest.raises(SourceError, match="empty"):
        CsvReader(io.BytesIO(b""), CsvOptions())
    with pytest.raises(SourceError, match="duplicate column"):
        CsvReader(io.BytesIO(b"a,a\n"), CsvOptions())


def test_open_source_local_gzip_zstd(tmp_path):
    import zstandard

    body = b"a,b\n1,2\n"
    (tmp_path / "x.csv").write_bytes(body)
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(body))
    (tmp_path / "x.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    for name in ("x.csv", "x.csv.gz", "x.csv.zst"):
        stream = open_source(str(tmp_path / name))
        try:
            assert stream.raw.read() == body
        finally:
            stream.close()


def test_open_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.csv"))
    with pytest.raises(SourceError, match="directory"):
        open_source(str(tmp_path))
    with pytest.raises(SourceError, match="s3://bucket/key"):
        open_source("s3://only-bucket")


def test_corrupt_gzip_is_a_source_error(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"not gzip at all")
    stream = open_source(str(path))
    with pytest.raises(SourceError):
        list(iter_records(stream.raw, ","))


def test_open_source_s3(aws):
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="k.csv.gz", Body=gzip.compress(b"a\n1\n"))
    stream = open_source("s3://bkt/k.csv.gz", s3_client=s3)
    assert stream.raw.read() == b"a\n1\n"
    with pytest.raises(SourceError, match="no such object"):
        open_source("s3://bkt/missing.csv", s3_client=s3)
    with pytest.raises(SourceError, match="no such bucket"):
        open_source("s3://nobucket/x.csv", s3_client=s3)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_csv_header_row_is_read_up_to_10_kib_as_itemreader_reads_it(engine):
    """AWS Step Functions developer guide, "ItemReader (Map)": "Currently, Step Functions
    supports CSV headers of up to 10 KiB" (docs/aws-facts.md, ItemReader): 10,240 bytes
    of header row are read, one byte more stops with one line."""
    import io

    from importer.input.options import CsvOptions
    from importer.input.source import CsvReader, SourceError
    from importer.transform.native_engine import open_reader

    reader = CsvReader if engine == "python" else open_reader
    names = [f"column_{i:05d}" for i in range(10_240 // 13)]  # 13 bytes a name and comma
    header = ",".join(names)
    header += "," + "x" * (10_240 - len(header) - 1)
    assert len(header.encode()) == 10_240
    read = reader(io.BytesIO((header + "\n" + "1," * len(names) + "2\n").encode()), CsvOptions())
    assert len(read.header) == len(names) + 1
    with pytest.raises(SourceError) as caught:
        reader(io.BytesIO((header + "y\n1\n").encode()), CsvOptions())
    assert str(caught.value) == (
        "header row longer than 10,240 bytes: Step Functions' ItemReader reads CSV "
        "headers of up to 10 KiB"
    )
