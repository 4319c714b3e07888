"""The FMP client against FMP's documented shapes, written by hand (`fixtures/fmp/`).

The other client tests take their expected values from the simulator, which shares the
client's picture of FMP: a client that misreads FMP passes them. Here each endpoint's body is
a hand-written file shaped as `fmp-api-facts.md` describes FMP's answer (quirks included),
served over real HTTP from a loopback server at FMP's `stable` paths, and what the real
`FMPResource` parses from it is compared field by field with rows also written by hand.
The error bodies FMP sends must raise the matching error class, with a message that says
what happened and never holds the API key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest

from stock_assets.fmp import (
    FMPAuthError, FMPBandwidthError, FMPError, FMPForbiddenError, FMPPlanError, FMPQueryError, FMPRateLimitError,
    FMPResource, FMPTransientError)

FIXTURES = Path(__file__).parent / "fixtures" / "fmp"
KEY = "sk-SHAPECANARY-3b7e91d04c2a"  # distinctive: any leak of it is unambiguous
JSON = "application/json;charset=UTF-8"
CSV = "text/csv;charset=UTF-8"
# eod-bulk and profile-bulk come chunked, without Content-Length: served here in pieces this
# small, a line, a quoted field and a multi-byte character are all cut across chunks.
CSV_CHUNK = 7
MAX_RETRIES = 2  # so an error that persists takes 3 attempts


# =========================================================================== the server
@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = JSON
    chunked: bool = False


def fixture_body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def expected_rows(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))["records"]


def json_answer(name: str, status: int = 200) -> Answer:
    return Answer(status, fixture_body(name))


def csv_answer(name: str) -> Answer:
    return Answer(200, fixture_body(name), CSV, chunked=True)


class FakeFMP:
    """FMP's `stable` API on a loopback port, answering each path with the bodies a test gives it.

    A path answers its queued answers in turn, the last one for good; a path given nothing
    answers as FMP answers an unknown path (404 `[]`). Every request is recorded.
    """

    def __init__(self) -> None:
        self._answers: dict[str, list[Answer]] = {}
        self._requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and chunked answers, as FMP serves them

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                url = urlsplit(self.path)
                path = url.path[len("/stable/"):] if url.path.startswith("/stable/") else url.path
                answer = fake._record_and_answer(path, url.query, self.headers.get("apikey"))
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                if answer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(answer.body), CSV_CHUNK):
                        piece = answer.body[start:start + CSV_CHUNK]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-fmp", daemon=True)
        self._thread.start()
        self.root_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.base_url = self.root_url + "/stable"

    def _record_and_answer(self, path: str, query: str, apikey: str | None) -> Answer:
        with self._lock:
            self._requests.append({"path": path, "query": dict(parse_qsl(query, keep_blank_values=True)),
                                   "raw_query": query, "apikey": apikey})
            queue = self._answers.get(path)
            if not queue:
                return Answer(404, fixture_body("errors/404-unknown-path.json"))
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def serve(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._answers[path] = list(answers)

    def reset(self) -> None:
        with self._lock:
            self._answers.clear()
            self._requests.clear()

    def queries(self, path: str) -> list[dict[str, str]]:
        """The query strings `path` got, after checking that each carried the key in the header only."""
        with self._lock:
            requests = [r for r in self._requests if r["path"] == path]
        for request in requests:
            assert request["apikey"] == KEY, request
            assert "apikey" not in request["raw_query"].lower(), request  # never in the URL
        return [r["query"] for r in requests]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def server():
    fake = FakeFMP()
    yield fake
    fake.stop()


@pytest.fixture()
def fake(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture()
def make(fake, tmp_path):
    """Factory of real FMPResources pointed at the fake (fast retries, own limiter file); closed after."""
    made: list[FMPResource] = []

    def build(**overrides: Any) -> FMPResource:
        config = dict(api_key=KEY, base_url=fake.base_url, plan="ultimate", rate_limit_per_min=600_000,
                      limiter_state=str(tmp_path / "limiter.sqlite"), bulk_calls_per_min=600_000,
                      max_retries=MAX_RETRIES, backoff_base_s=0.001, backoff_max_s=0.002, timeout_s=10.0)
        resource = FMPResource(**{**config, **overrides})
        made.append(resource)
        return resource

    yield build
    for resource in made:
        resource.close()


# =========================================================================== comparing
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def assert_same_value(got: Any, want: Any, where: str) -> None:
    """Equal, and of the type written: an int where FMP sent `2.9909012e7`, a float where a price,
    a date where the expected file has `YYYY-MM-DD`, an aware UTC datetime where `...T...Z`."""
    if want is None:
        assert got is None, f"{where}: {got!r}, expected None"
    elif isinstance(want, str) and ISO_UTC.match(want):
        assert isinstance(got, dt.datetime) and got.utcoffset() == dt.timedelta(0), f"{where}: {got!r}, expected {want}"
        assert got.strftime("%Y-%m-%dT%H:%M:%SZ") == want, f"{where}: {got!r}, expected {want}"
    elif isinstance(want, str) and ISO_DATE.match(want):
        assert type(got) is dt.date and got.isoformat() == want, f"{where}: {got!r}, expected the date {want}"
    elif isinstance(want, bool):
        assert got is want, f"{where}: {got!r}, expected {want!r}"
    elif isinstance(want, (int, float, str)):
        assert type(got) is type(want) and got == want, f"{where}: {got!r} ({type(got).__name__}), expected {want!r}"
    else:
        raise AssertionError(f"{where}: no such value in an expected file: {want!r}")


def assert_records(parsed, expected: list[dict[str, Any]]) -> None:
    """Every record, field by field, against the hand-written rows (same order, same fields)."""
    assert parsed.rejects == [], parsed.rejects
    got = [record.model_dump() for record in parsed.records]
    assert [g.get("symbol") for g in got] == [w.get("symbol") for w in expected]
    assert len(got) == len(expected)
    for index, (row, want) in enumerate(zip(got, expected)):
        where = f"row {index} ({want.get('symbol') or want.get('old_symbol')})"
        assert set(row) == set(want), f"{where}: fields {sorted(set(row) ^ set(want))} differ"
        for name, value in want.items():
            assert_same_value(row[name], value, f"{where}.{name}")


# =========================================================================== endpoints
def test_company_screener_exponent_volumes_nulls_and_venue_names(fake, make):
    fake.serve("company-screener", json_answer("company-screener.json"))
    parsed = make().company_screener("NASDAQ", limit=1000, page=0, is_actively_trading=True, is_fund=False,
                                     is_etf=None)
    assert_records(parsed, expected_rows("company-screener.expected.json"))
    assert fake.queries("company-screener") == [
        {"exchange": "NASDAQ", "limit": "1000", "page": "0", "isActivelyTrading": "true", "isFund": "false"}]


def test_eod_bulk_csv_read_by_header_name_low_before_high(fake, make):
    fake.serve("eod-bulk", csv_answer("eod-bulk.csv"))
    resource = make()
    everything = resource.eod_bulk(dt.date(2024, 7, 9))
    expected = expected_rows("eod-bulk.expected.json")
    assert_records(everything, expected)
    universe = {"AAPL", "BRK-B", "KO", "MSFT"}
    kept = resource.eod_bulk(dt.date(2024, 7, 9), keep=universe.__contains__)
    assert_records(kept, [row for row in expected if row["symbol"] in universe])
    assert fake.queries("eod-bulk") == [{"date": "2024-07-09"}] * 2


def test_historical_prices_newest_first_without_adj_close(fake, make):
    fake.serve("historical-price-eod/full", json_answer("historical-price-eod-full.json"))
    parsed = make().historical_prices("AAPL", dt.date(2024, 7, 3), dt.date(2024, 7, 9))
    assert_records(parsed, expected_rows("historical-price-eod-full.expected.json"))
    assert fake.queries("historical-price-eod/full") == [{"symbol": "AAPL", "from": "2024-07-03", "to": "2024-07-09"}]


def test_price_history_columns_from_the_newest_first_answer(fake, make):
    """The columnar path (`price_history`, what first loads use) reads the same bars; an answer
    under the 5,000-row cap is the whole range: one call."""
    fake.serve("historical-price-eod/full", json_answer("historical-price-eod-full.json"))
    history = make().price_history("AAPL", dt.date(2024, 7, 3), dt.date(2024, 7, 9))
    assert history.rejects == []
    got = history.table.to_pylist()
    columns = ("symbol", "date", "open", "high", "low", "close", "volume")
    want = [{name: row[name] for name in columns} for row in expected_rows("historical-price-eod-full.expected.json")]
    assert len(got) == len(want)
    for index, (row, expected) in enumerate(zip(got, want)):
        assert set(row) == set(expected), index
        for name in columns:
            assert_same_value(row[name], expected[name], f"bar {index} ({expected['date']}).{name}")
    assert fake.queries("historical-price-eod/full") == [{"symbol": "AAPL", "from": "2024-07-03", "to": "2024-07-09"}]


def test_batch_quote_echoed_duplicate_and_dropped_unknown_symbols(fake, make):
    fake.serve("batch-quote", json_answer("batch-quote.json"))
    parsed = make().batch_quotes(["AAPL", "AAPL", "MSFT", "NOPEZ", "BRK.B"])
    parsed.records.sort(key=lambda quote: quote.symbol)
    assert_records(parsed, expected_rows("batch-quote.expected.json"))
    assert fake.queries("batch-quote") == [{"symbols": "AAPL,AAPL,MSFT,NOPEZ,BRK.B"}]


def test_dividends_empty_string_dates_percent_yield_and_split_adjusted_amounts(fake, make):
    fake.serve("dividends", json_answer("dividends.json"))
    parsed = make().dividends("AAPL")
    assert_records(parsed, expected_rows("dividends.expected.json"))
    assert fake.queries("dividends") == [{"symbol": "AAPL"}]


def test_dividends_calendar_worldwide_rows_and_two_dividends_on_one_ex_date(fake, make):
    fake.serve("dividends-calendar", json_answer("dividends-calendar.json"))
    parsed = make().dividends_calendar(dt.date(2024, 6, 14), dt.date(2024, 6, 14))
    assert_records(parsed, expected_rows("dividends-calendar.expected.json"))
    assert parsed.at_cap is False
    assert fake.queries("dividends-calendar") == [{"from": "2024-06-14", "to": "2024-06-14"}]


@pytest.mark.parametrize("rows, at_cap", [(3999, False), (4000, True)])
def test_dividends_calendar_answer_at_the_4000_row_cap_is_flagged(fake, make, rows, at_cap):
    """FMP cuts the calendar at 4,000 rows, silently dropping the oldest dates."""
    row = json.loads(fixture_body("dividends-calendar.json"))[0]  # KO's row, as written by hand
    body = json.dumps([{**row, "symbol": f"S{i:04d}"} for i in range(rows)]).encode()
    fake.serve("dividends-calendar", Answer(200, body))
    parsed = make().dividends_calendar(dt.date(2024, 6, 1), dt.date(2024, 6, 14))
    assert parsed.at_cap is at_cap
    assert len(parsed.records) == rows and parsed.rejects == []


@pytest.mark.parametrize("symbol, fixture", [("AAPL", "profile"), ("ARM", "profile-adr")])
def test_profile_employees_as_a_string_and_nullable_identifiers(fake, make, symbol, fixture):
    fake.serve("profile", json_answer(f"{fixture}.json"))
    parsed = make().profile(symbol)
    assert_records(parsed, expected_rows(f"{fixture}.expected.json"))
    assert fake.queries("profile") == [{"symbol": symbol}]


def test_profile_of_a_dotted_or_unknown_ticker_is_empty(fake, make):
    fake.serve("profile", Answer(200, b"[]"))
    resource = make()
    for symbol in ("BRK.B", "NOPEZ"):
        parsed = resource.profile(symbol)
        assert parsed.records == [] and parsed.rejects == []
    assert fake.queries("profile") == [{"symbol": "BRK.B"}, {"symbol": "NOPEZ"}]


def test_profile_bulk_csv_parts_until_the_400_past_the_end(fake, make):
    fake.serve("profile-bulk", csv_answer("profile-bulk.csv"))
    resource = make()
    expected = expected_rows("profile-bulk.expected.json")
    assert_records(resource.profile_bulk(0), expected)
    wanted = {"AAPL", "MSFT"}
    assert_records(resource.profile_bulk(0, keep=wanted.__contains__), [r for r in expected if r["symbol"] in wanted])
    # The part past the last: FMP's plain-text 400, served as JSON. No more parts, no error.
    fake.serve("profile-bulk", Answer(400, fixture_body("errors/400-query-error-part.txt")))
    assert resource.profile_bulk(1) is None
    assert fake.queries("profile-bulk") == [{"part": "0"}, {"part": "0"}, {"part": "1"}]


def test_splits_calendar_forward_reverse_and_fractional_ratios(fake, make):
    fake.serve("splits-calendar", json_answer("splits-calendar.json"))
    parsed = make().splits_calendar(dt.date(2024, 6, 10), dt.date(2024, 6, 10))
    assert_records(parsed, expected_rows("splits-calendar.expected.json"))
    assert fake.queries("splits-calendar") == [{"from": "2024-06-10", "to": "2024-06-10"}]


def test_delisted_companies(fake, make):
    fake.serve("delisted-companies", json_answer("delisted-companies.json"))
    parsed = make().delisted_companies(page=0, limit=100)
    assert_records(parsed, expected_rows("delisted-companies.expected.json"))
    assert fake.queries("delisted-companies") == [{"page": "0", "limit": "100"}]


def test_symbol_change(fake, make):
    fake.serve("symbol-change", json_answer("symbol-change.json"))
    parsed = make().symbol_changes()
    assert_records(parsed, expected_rows("symbol-change.expected.json"))
    assert fake.queries("symbol-change") == [{}]


def test_stock_list(fake, make):
    fake.serve("stock-list", json_answer("stock-list.json"))
    parsed = make().stock_list()
    assert_records(parsed, expected_rows("stock-list.expected.json"))
    assert fake.queries("stock-list") == [{}]


# =========================================================================== errors
DAY = dt.date(2024, 7, 9)
Call = Callable[[FMPResource], Any]


@dataclass(frozen=True)
class ErrorCase:
    path: str
    answer: Answer
    call: Call
    error: type[FMPError]
    status: int
    says: tuple[str, ...]  # what the message must contain: FMP's own words and what to do
    attempts: int  # 1: never retried; 1 + MAX_RETRIES: retried to the end


ERROR_CASES = {
    "401 invalid key": ErrorCase(
        "profile", json_answer("errors/401-invalid-key.json", 401), lambda r: r.profile("AAPL"),
        FMPAuthError, 401, ("401", "Invalid API KEY", "FMP_API_KEY"), 1),
    "402 restricted endpoint": ErrorCase(
        "eod-bulk", json_answer("errors/402-restricted-endpoint.json", 402), lambda r: r.eod_bulk(DAY),
        FMPPlanError, 402, ("402", "eod-bulk", "Restricted Endpoint", "FMP_PLAN"), 1),
    "402 premium query parameter": ErrorCase(
        "historical-price-eod/full", json_answer("errors/402-premium-query-parameter.json", 402),
        lambda r: r.historical_prices("AAPL", dt.date(1990, 1, 1), DAY),
        FMPPlanError, 402, ("402", "Premium Query Parameter"), 1),
    "402 special endpoint": ErrorCase(
        "batch-quote", json_answer("errors/402-special-endpoint.json", 402), lambda r: r.batch_quotes(["AAPL"]),
        FMPPlanError, 402, ("402", "batch-quote", "Special Endpoint"), 1),
    "402 exclusive endpoint": ErrorCase(
        "profile-bulk", json_answer("errors/402-exclusive-endpoint.json", 402), lambda r: r.profile_bulk(0),
        FMPPlanError, 402, ("402", "profile-bulk", "Exclusive Endpoint"), 1),
    "403 legacy endpoint": ErrorCase(
        "profile", json_answer("errors/403-legacy-endpoint.json", 403), lambda r: r.profile("AAPL"),
        FMPForbiddenError, 403, ("403", "Legacy Endpoint", "FMP_BASE_URL"), 1),
    "400 plain-text query error served as JSON": ErrorCase(
        "dividends", Answer(400, fixture_body("errors/400-query-error-symbol.txt")), lambda r: r.dividends(""),
        FMPQueryError, 400, ("400", "dividends", "Query Error: Invalid or missing query parameter - symbol"), 1),
    "429 limit reach to the last retry": ErrorCase(
        "profile", json_answer("errors/429-limit-reach.json", 429), lambda r: r.profile("AAPL"),
        FMPRateLimitError, 429, ("profile", f"{1 + MAX_RETRIES} attempts", "Limit Reach"), 1 + MAX_RETRIES),
    "429 bandwidth limit reach": ErrorCase(
        "profile", json_answer("errors/429-bandwidth-limit-reach.json", 429), lambda r: r.profile("AAPL"),
        FMPBandwidthError, 429, ("bandwidth", "Bandwidth Limit Reach"), 1),
    "200 carrying Limit Reach (daily quota) to the last retry": ErrorCase(
        "company-screener", json_answer("errors/429-limit-reach.json", 200),
        lambda r: r.company_screener("NASDAQ"),
        FMPRateLimitError, 200, ("company-screener", f"{1 + MAX_RETRIES} attempts", "Limit Reach"), 1 + MAX_RETRIES),
    "200 carrying Limit Reach in place of bulk CSV to the last retry": ErrorCase(
        "eod-bulk", json_answer("errors/429-limit-reach.json", 200), lambda r: r.eod_bulk(DAY),
        FMPRateLimitError, 200, ("eod-bulk", f"{1 + MAX_RETRIES} attempts", "throttle"), 1 + MAX_RETRIES),
    "200 carrying Invalid API KEY": ErrorCase(
        "dividends-calendar", json_answer("errors/401-invalid-key.json", 200),
        lambda r: r.dividends_calendar(DAY, DAY),
        FMPAuthError, 401, ("Invalid API KEY", "FMP_API_KEY"), 1),
    "200 carrying Bandwidth Limit Reach": ErrorCase(
        "splits-calendar", json_answer("errors/429-bandwidth-limit-reach.json", 200),
        lambda r: r.splits_calendar(DAY, DAY),
        FMPBandwidthError, 200, ("bandwidth", "Bandwidth Limit Reach"), 1),
    "5xx to the last retry": ErrorCase(
        "profile", Answer(502, b"<html><body>502 Bad Gateway</body></html>", "text/html"), lambda r: r.profile("AAPL"),
        FMPTransientError, 502, ("profile", f"{1 + MAX_RETRIES} attempts", "502"), 1 + MAX_RETRIES),
    "malformed JSON to the last retry": ErrorCase(
        "profile", Answer(200, fixture_body("profile.json")[:200]), lambda r: r.profile("AAPL"),
        FMPTransientError, 200, ("profile", f"{1 + MAX_RETRIES} attempts", "malformed"), 1 + MAX_RETRIES),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_fmp_error_bodies_raise_their_error_class(fake, make, case: ErrorCase):
    fake.serve(case.path, case.answer)
    with pytest.raises(FMPError) as info:
        case.call(make())
    error = info.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    assert error.status == case.status and error.endpoint == case.path
    message = str(error)
    for words in case.says:
        assert words.lower() in message.lower(), f"{words!r} not in {message!r}"
    assert KEY not in message and KEY not in repr(error.args)
    assert len(fake.queries(case.path)) == case.attempts


def test_unknown_path_answers_404_and_names_the_base_url(fake, make):
    resource = make(base_url=fake.root_url + "/api/v4")  # nothing is served there: FMP's 404 `[]`
    with pytest.raises(FMPError) as info:
        resource.profile("AAPL")
    assert type(info.value) is FMPError and info.value.status == 404
    assert "404" in str(info.value) and "FMP_BASE_URL" in str(info.value) and "/api/v4" in str(info.value)
    assert KEY not in str(info.value)
    assert len(fake.queries("/api/v4/profile")) == 1  # not retried


def test_a_key_echoed_in_an_error_body_is_masked(fake, make):
    """FMP's documented bodies do not repeat the key; were one to (or a proxy before it), the
    message still must not carry it."""
    body = json.dumps({"Error Message": f"Invalid API KEY. The key {KEY} is not valid."}).encode()
    fake.serve("profile", Answer(401, body))
    with pytest.raises(FMPAuthError) as info:
        make().profile("AAPL")
    assert "Invalid API KEY" in str(info.value) and "***" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value.args)


@pytest.mark.parametrize("path, first, call, fixture", [
    ("profile", json_answer("errors/429-limit-reach.json", 429), lambda r: r.profile("AAPL"), "profile"),
    ("company-screener", json_answer("errors/429-limit-reach.json", 200), lambda r: r.company_screener("NASDAQ"),
     "company-screener"),
    ("eod-bulk", json_answer("errors/429-limit-reach.json", 200), lambda r: r.eod_bulk(DAY), "eod-bulk"),
], ids=["429 then data", "200 Limit Reach then data", "bulk throttle then CSV"])
def test_limit_reach_is_retried_and_the_next_answer_parsed(fake, make, path, first, call, fixture):
    data = csv_answer(f"{fixture}.csv") if path == "eod-bulk" else json_answer(f"{fixture}.json")
    fake.serve(path, first, data)
    assert_records(call(make()), expected_rows(f"{fixture}.expected.json"))
    assert len(fake.queries(path)) == 2
