"""The SOAP side of the HQI with the real clients' SOAP toolkits: suds (pyhfc's, ``retxml=True``)
and zeep (SunPy's HELIO client) read our WSDL and build each operation's request, which
:func:`parse_request` reads back; their answer handling is fed our envelopes and faults."""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET

import pytest
import requests
import suds
import suds.client
import zeep
from astropy.io.votable.table import parse_single_table
from lxml import etree
from zeep.transports import Transport

from hfc_tasks.hqi import soap, votable
from hfc_tasks.hqi.answer import Answer, Field, Result

ENDPOINT = "http://127.0.0.1:8123/hfc/HelioTavernaService"
WSDL_NS = "{http://schemas.xmlsoap.org/wsdl/}"
XS = "{http://www.w3.org/2001/XMLSchema}"


@pytest.fixture(scope="module")
def wsdl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsdl") / "HelioTavernaService.wsdl"
    path.write_bytes(soap.wsdl(ENDPOINT))
    return path


@pytest.fixture(scope="module")
def suds_client(wsdl_file):
    return suds.client.Client(wsdl_file.as_uri(), retxml=True, nosend=True, cache=None)


@pytest.fixture(scope="module")
def zeep_client(wsdl_file):
    return zeep.Client(str(wsdl_file))


def an_answer() -> Answer:
    fields = [Field("ID_AR", "int"), Field("DATE_OBS", "char", timestamp=True), Field("AREA", "double")]
    rows = [(1, dt.datetime(2024, 3, 1, 12), 1.5), (None, dt.datetime(2024, 3, 1, 12, 0, 0, 5), None)]
    return Answer([Result("VIEW_AR_HQI", fields, rows)], "SELECT * FROM hfc.view_ar_hqi", dt.datetime(2026, 12, 2))


# ---------------------------------------------------------------- the WSDL
def test_wsdl_is_document_literal_soap_1_1_at_the_given_address():
    url = "https://hfc.example.org/hqi/HelioTavernaService?a=1&b=<2>"
    root = ET.fromstring(soap.wsdl(url))
    assert root.tag == f"{WSDL_NS}definitions" and root.get("targetNamespace") == soap.NAMESPACE
    (schema,) = root.iter(f"{XS}schema")
    assert schema.get("elementFormDefault") == "unqualified" and schema.get("targetNamespace") == soap.NAMESPACE
    (address,) = root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == url
    (binding,) = root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}binding")
    assert binding.get("style") == "document" and binding.get("transport") == "http://schemas.xmlsoap.org/soap/http"
    bodies = list(root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}body"))
    assert len(bodies) == 2 * len(soap.OPERATIONS) and {b.get("use") for b in bodies} == {"literal"}
    (port_type,) = root.iter(f"{WSDL_NS}portType")
    assert [op.get("name") for op in port_type] == list(soap.OPERATIONS)
    (response,) = [t for t in schema.iter(f"{XS}complexType") if t.get("name") == "queryResponse"]
    (anything,) = response.iter(f"{XS}any")
    assert anything.get("processContents") == "lax"


def test_suds_reads_the_wsdl_with_every_operation_and_parameter(suds_client):
    methods = suds_client.wsdl.services[0].ports[0].methods
    assert set(methods) == set(soap.OPERATIONS)
    for operation, parameters in soap.PARAMETERS.items():
        params = methods[operation].binding.input.param_defs(methods[operation])
        assert [p[0] for p in params] == [p[0] for p in parameters], operation
    assert suds_client.wsdl.services[0].ports[0].location == ENDPOINT


# pyhfc's calls (HQIClient.call: parameters that are None are not sent)
SUDS_CALLS = [
    ("getTableNames", {}, {}),
    ("getTableFields", {"table_name": "VIEW_SP_HQI"}, {"table_name": "VIEW_SP_HQI"}),
    (
        "SQLSelect",
        {"WHAT": "COUNT(*) AS N", "FROM": ["VIEW_SP_HQI"], "WHERE": "(OBSERVAT = 'SDO') AND (R > 1.5 & <x>)",
         "ORDER_BY": "ABS(EXTRACT(EPOCH FROM DATE_OBS - '2024-03-01 00:00:00'))", "LIMIT": 1, "OFFSET": 0},
        {"WHAT": "COUNT(*) AS N", "FROM": ["VIEW_SP_HQI"], "WHERE": "(OBSERVAT = 'SDO') AND (R > 1.5 & <x>)",
         "ORDER_BY": "ABS(EXTRACT(EPOCH FROM DATE_OBS - '2024-03-01 00:00:00'))", "LIMIT": "1", "OFFSET": "0"},
    ),
    (
        "TimeQuery",
        {"STARTTIME": ["2024-03-01T00:00:00"], "ENDTIME": ["2024-03-02T00:00:00"],
         "FROM": ["VIEW_SP_HQI", "VIEW_AR_HQI"], "MAXRECORDS": 10000},
        {"STARTTIME": ["2024-03-01T00:00:00"], "ENDTIME": ["2024-03-02T00:00:00"],
         "FROM": ["VIEW_SP_HQI", "VIEW_AR_HQI"], "MAXRECORDS": "10000"},
    ),
    (
        "Query",
        {"STARTTIME": ["2024-03-01T00:00:00"], "ENDTIME": ["2024-03-02T00:00:00"], "FROM": ["VIEW_AR_HQI"],
         "WHERE": "OBSERVAT,SDO;FEAT_AREA_DEG2,10/", "MAXRECORDS": 50, "STARTINDEX": 5, "JOIN": "Zürich"},
        {"STARTTIME": ["2024-03-01T00:00:00"], "ENDTIME": ["2024-03-02T00:00:00"], "FROM": ["VIEW_AR_HQI"],
         "WHERE": "OBSERVAT,SDO;FEAT_AREA_DEG2,10/", "MAXRECORDS": "50", "STARTINDEX": "5", "JOIN": "Zürich"},
    ),
]


@pytest.mark.parametrize(("operation", "sent", "read"), SUDS_CALLS, ids=[c[0] for c in SUDS_CALLS])
def test_suds_requests_are_read_back(suds_client, operation, sent, read):
    request = getattr(suds_client.service, operation)(**sent)
    assert soap.parse_request(request.envelope) == (operation, read)


# SunPy's HELIO client passes scalars (FROM=table, STARTTIME=isot) and MAXRECORDS=None
ZEEP_CALLS = [
    ("getTableNames", {}, {}),
    ("getTableFields", {"table_name": "FRC_INFO"}, {"table_name": "FRC_INFO"}),
    (
        "TimeQuery",
        {"STARTTIME": "2024-03-01T00:00:00.000", "ENDTIME": "2024-03-02T00:00:00.000", "FROM": "VIEW_AR_HQI",
         "MAXRECORDS": None},
        {"STARTTIME": ["2024-03-01T00:00:00.000"], "ENDTIME": ["2024-03-02T00:00:00.000"], "FROM": ["VIEW_AR_HQI"]},
    ),
    (
        "SQLSelect",
        {"WHAT": ["DATE_OBS", "R_SUN"], "FROM": ["VIEW_SP_HQI"], "WHERE": "", "LIMIT": 3},
        {"WHAT": "DATE_OBS, R_SUN", "FROM": ["VIEW_SP_HQI"], "WHERE": "", "LIMIT": "3"},
    ),
    (
        "Query",
        {"STARTTIME": ["2024-03-01", "2024-04-01"], "ENDTIME": ["2024-03-02", "2024-04-02"], "FROM": ["VIEW_T3_HQI"],
         "WHERE": "LAT_HG,-10/10", "INSTRUMENT": "NRH"},
        {"STARTTIME": ["2024-03-01", "2024-04-01"], "ENDTIME": ["2024-03-02", "2024-04-02"], "FROM": ["VIEW_T3_HQI"],
         "WHERE": "LAT_HG,-10/10", "INSTRUMENT": "NRH"},
    ),
]


@pytest.mark.parametrize(("operation", "sent", "read"), ZEEP_CALLS, ids=[c[0] for c in ZEEP_CALLS])
def test_zeep_requests_are_read_back(zeep_client, operation, sent, read):
    message = zeep_client.create_message(zeep_client.service, operation, **sent)
    assert soap.parse_request(etree.tostring(message)) == (operation, read)


# ---------------------------------------------------------------- answers as the clients take them
class CannedReply(Transport):
    """zeep transport answering every POST with a given body (no network)."""

    def __init__(self, body: bytes, status: int = 200):
        super().__init__()
        self.body, self.status, self.sent = body, status, []

    def post_xml(self, address, envelope, headers):
        self.sent.append((address, etree.tostring(envelope)))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = "text/xml; charset=utf-8"
        response.encoding = "utf-8"
        return response


def test_zeep_hands_the_caller_the_votable_as_sunpy_reads_it(wsdl_file):
    transport = CannedReply(soap.envelope(votable.write(an_answer()), "TimeQuery"))
    client = zeep.Client(str(wsdl_file), transport=transport)
    result = client.service.TimeQuery(
        STARTTIME="2024-03-01T00:00:00.000", ENDTIME="2024-03-02T00:00:00.000", FROM="VIEW_AR_HQI", MAXRECORDS=None
    )
    assert result.tag == "{http://www.ivoa.net/xml/VOTable/v1.1}VOTABLE"
    ((address, sent),) = transport.sent
    assert address == ENDPOINT and soap.parse_request(sent)[0] == "TimeQuery"
    table = parse_single_table(io.BytesIO(etree.tostring(result))).to_table()  # SunPy's votable_handler
    assert list(table["ID_AR"].mask) == [False, True] and table["ID_AR"][0] == 1
    assert list(table["DATE_OBS"]) == ["2024-03-01T12:00:00", "2024-03-01T12:00:00.000005"]
    assert table["AREA"][0] == 1.5 and bool(table["AREA"].mask[1])


def test_zeep_raises_the_fault(wsdl_file):
    client = zeep.Client(str(wsdl_file), transport=CannedReply(soap.fault("unknown operation 'X'"), status=500))
    with pytest.raises(zeep.exceptions.Fault, match="unknown operation 'X'"):
        client.service.getTableNames()


def test_suds_gives_pyhfc_the_raw_answer_and_raises_the_fault(wsdl_file):
    client = suds.client.Client(wsdl_file.as_uri(), retxml=True, cache=None)
    reply = soap.envelope(votable.write(an_answer()), "SQLSelect")
    raw = client.service.SQLSelect(WHAT="*", FROM=["VIEW_AR_HQI"], __inject={"reply": reply})
    assert raw == reply
    # pyhfc's extract_votable: the VOTABLE element anywhere in the answer, no Fault
    root = ET.fromstring(raw)
    assert not [e for e in root.iter() if e.tag.endswith("}Fault")]
    (votable_el,) = [e for e in root.iter() if e.tag.endswith("}VOTABLE")]
    infos = {i.get("name"): i.get("value") for i in votable_el.iter("{http://www.ivoa.net/xml/VOTable/v1.1}INFO")}
    assert infos["QUERY_STATUS"] == "OK"
    with pytest.raises(suds.WebFault, match="FROM names no served table"):
        client.service.SQLSelect(
            WHAT="*", FROM=["X"], __inject={"reply": soap.fault("FROM names no served table"), "status": 500}
        )


# ---------------------------------------------------------------- envelope and fault
def test_envelope_wraps_the_votable_in_query_response():
    document = votable.write(an_answer())
    answer = soap.envelope(document, "Query")
    assert answer.count(b"<?xml") == 1 and b"astropy" not in answer
    root = ET.fromstring(answer)
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    (response,) = list(body)
    assert response.tag == f"{{{soap.NAMESPACE}}}queryResponse"
    (votable_el,) = list(response)
    assert votable_el.tag == "{http://www.ivoa.net/xml/VOTable/v1.1}VOTABLE" and votable_el.get("version") == "1.1"
    with pytest.raises(ValueError):
        soap.envelope(document, "DropTable")
    with pytest.raises(ValueError):
        soap.envelope(b"<html/>", "Query")


def test_fault_is_well_formed_for_any_message():
    message = "bad <WHERE> & \"x\" \x01 ]]> é\r\n"
    root = ET.fromstring(soap.fault(message))
    (fault,) = root.iter("{http://schemas.xmlsoap.org/soap/envelope/}Fault")
    assert fault.findtext("faultcode") == "soap:Client"
    assert fault.findtext("faultstring") == "bad <WHERE> & \"x\" \ufffd ]]> é\n"  # CRLF reads as LF
    assert ET.fromstring(soap.fault("down", "soap:Server")).find(".//faultcode").text == "soap:Server"
    with pytest.raises(ValueError):
        soap.fault("x", "<evil/>")


# ---------------------------------------------------------------- what parse_request accepts
def envelope_of(inner: str, header: str = "") -> bytes:
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:h="{soap.NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"{header}<s:Body>{inner}</s:Body></s:Envelope>"
    ).encode()


def test_parse_request_details():
    body = envelope_of(
        '<h:Query><FROM>A</FROM><FROM>B</FROM><STARTTIME/><ENDTIME>2024</ENDTIME><WHERE></WHERE>'
        '<MAXRECORDS xsi:nil="true"/><JOIN>  spaced  </JOIN></h:Query>',
        header="<s:Header><x>ignored</x></s:Header>",
    )
    assert soap.parse_request(body) == (
        "Query",
        {"FROM": ["A", "B"], "STARTTIME": [""], "ENDTIME": ["2024"], "WHERE": "", "JOIN": "  spaced  "},
    )
    # an unqualified operation element is read too
    assert soap.parse_request(envelope_of("<getTableNames/>")) == ("getTableNames", {})
    assert soap.parse_request(envelope_of("<h:SQLSelect><WHAT>A</WHAT><WHAT>B</WHAT><FROM>T</FROM></h:SQLSelect>")) == (
        "SQLSelect",
        {"FROM": ["T"], "WHAT": "A, B"},
    )


BAD_REQUESTS = [
    (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<getTableFields><table_name>&lol2;</table_name></getTableFields></s:Body></s:Envelope>',
        "DTD",
    ),
    (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<getTableFields><table_name>&xxe;</table_name></getTableFields></s:Body></s:Envelope>',
        "DTD",
    ),
    (b'<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:1/x.dtd"><s:Envelope/>', "DTD"),
    (b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>", "not well-formed"),
    (b"", "not well-formed"),
    (b"<Envelope><Body><getTableNames/></Body></Envelope>", "not a SOAP envelope"),
    (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><getTableNames/></e:Body></e:Envelope>',
        "SOAP 1.2",
    ),
    (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>', "0 Body"),
    (envelope_of(""), "names no operation"),
    (envelope_of("<getTableNames/><getTableNames/>"), "one operation per request"),
    (envelope_of("<h:DropTable><FROM>x</FROM></h:DropTable>"), "unknown operation 'DropTable'"),
    (envelope_of("<h:TimeQuery><FROM>A</FROM><POS>1</POS></h:TimeQuery>"), "TimeQuery has no parameter 'POS'"),
    (envelope_of("<h:SQLSelect><FROM>A</FROM><WHERE>1</WHERE><WHERE>2</WHERE></h:SQLSelect>"), "more than once"),
    (envelope_of("<h:SQLSelect><FROM>A</FROM><WHERE><b>1</b></WHERE></h:SQLSelect>"), "holds elements"),
    (envelope_of("<h:TimeQuery><STARTTIME>2024</STARTTIME></h:TimeQuery>"), "needs the parameter FROM"),
    (envelope_of("<h:getTableFields/>"), "needs the parameter table_name"),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_requests_are_refused_with_a_reason(body, message):
    with pytest.raises(soap.SoapError, match=message.replace("(", r"\(")):
        soap.parse_request(body)
