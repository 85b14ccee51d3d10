"""The SOAP 1.1 side of ``{base}/HelioTavernaService``: its WSDL, the reading of a request, the
writing of an answer (a VOTable in a ``queryResponse``) and of a Fault.

The contract is the HELIO query service's (``http://helio-vo.eu/xml/QueryService/v0.1``,
document/literal, unqualified children), as its clients use it: pyhfc (suds, ``retxml=True``:
it reads the VOTABLE out of the raw answer), SunPy's HELIO client (zeep: the operation's result
is the VOTABLE element itself, the ``xs:any`` of ``queryResponse``), Taverna workflows.

Requests are parsed with defusedxml: no DTD, no entity, no external reference (the service is
public and anonymous). The caller bounds the size of the body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from hfc_tasks.hqi.votable import text

NAMESPACE = "http://helio-vo.eu/xml/QueryService/v0.1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
RESPONSE = "queryResponse"  # the answer element of every operation

# Each operation's parameters, in their WSDL order: (name, XML Schema type, minOccurs, repeated).
PARAMETERS: Mapping[str, tuple[tuple[str, str, int, bool], ...]] = {
    "getTableNames": (),
    "getTableFields": (("table_name", "string", 1, False),),
    "SQLSelect": (
        ("WHAT", "string", 0, True),
        ("FROM", "string", 1, True),
        ("WHERE", "string", 0, False),
        ("ORDER_BY", "string", 0, False),
        ("LIMIT", "int", 0, False),
        ("OFFSET", "int", 0, False),
    ),
    "TimeQuery": (
        ("STARTTIME", "string", 0, True),
        ("ENDTIME", "string", 0, True),
        ("FROM", "string", 1, True),
        ("MAXRECORDS", "int", 0, False),
        ("STARTINDEX", "int", 0, False),
    ),
    "Query": (
        ("STARTTIME", "string", 0, True),
        ("ENDTIME", "string", 0, True),
        ("FROM", "string", 1, True),
        ("WHERE", "string", 0, False),
        ("INSTRUMENT", "string", 0, False),
        ("MAXRECORDS", "int", 0, False),
        ("STARTINDEX", "int", 0, False),
        ("JOIN", "string", 0, False),
    ),
}
OPERATIONS = tuple(PARAMETERS)
# Parameters a request may repeat, handed over as lists; a repeated WHAT (the WSDL allows it, as
# the original's did) is one select list, its parts joined by ", ".
LISTS = ("FROM", "STARTTIME", "ENDTIME")
_FAULT_CODE = re.compile(r"^soap:[A-Za-z][A-Za-z.]*$")


class SoapError(ValueError):
    """A request the service cannot read; the message says what is wrong (a SOAP Fault with
    faultcode soap:Client)."""


def wsdl(endpoint_url: str) -> bytes:
    """The service's WSDL 1.1, its one port at ``endpoint_url`` (the public URL of
    ``{base}/HelioTavernaService``)."""
    types = []
    for operation, parameters in PARAMETERS.items():
        if not parameters:
            types.append(f'<xs:element name="{operation}"><xs:complexType><xs:sequence/></xs:complexType></xs:element>')
            continue
        elements = "".join(
            f'<xs:element name="{name}" type="xs:{kind}" minOccurs="{min_occurs}"'
            f'{" maxOccurs=" + chr(34) + "unbounded" + chr(34) if repeated else ""}/>'
            for name, kind, min_occurs, repeated in parameters
        )
        types.append(f'<xs:element name="{operation}" type="tns:{operation}"/>')
        types.append(f'<xs:complexType name="{operation}"><xs:sequence>{elements}</xs:sequence></xs:complexType>')
    messages = "".join(
        f'<wsdl:message name="{operation}"><wsdl:part name="parameters" element="tns:{operation}"/></wsdl:message>'
        for operation in OPERATIONS
    )
    port_operations = "".join(
        f'<wsdl:operation name="{operation}"><wsdl:input message="tns:{operation}"/>'
        f'<wsdl:output message="tns:{RESPONSE}"/></wsdl:operation>'
        for operation in OPERATIONS
    )
    binding_operations = "".join(
        f'<wsdl:operation name="{operation}"><soap:operation soapAction="" style="document"/>'
        '<wsdl:input><soap:body use="literal"/></wsdl:input>'
        '<wsdl:output><soap:body use="literal"/></wsdl:output></wsdl:operation>'
        for operation in OPERATIONS
    )
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="HelioQueryServiceService" targetNamespace="{NAMESPACE}"
 xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
 xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{NAMESPACE}">
<wsdl:documentation>Heliophysics Feature Catalogue: HELIO query interface (HQI). Every operation
 answers a queryResponse holding a VOTable 1.1 document (http://www.ivoa.net/xml/VOTable/v1.1).</wsdl:documentation>
<wsdl:types>
<xs:schema targetNamespace="{NAMESPACE}" elementFormDefault="unqualified" version="1.0">
{"".join(types)}
<xs:element name="{RESPONSE}" type="tns:{RESPONSE}"/>
<xs:complexType name="{RESPONSE}"><xs:sequence>
<xs:any namespace="##any" processContents="lax" minOccurs="0"/>
</xs:sequence></xs:complexType>
</xs:schema>
</wsdl:types>
<wsdl:message name="{RESPONSE}"><wsdl:part name="response" element="tns:{RESPONSE}"/></wsdl:message>
{messages}
<wsdl:portType name="HelioQueryService">{port_operations}</wsdl:portType>
<wsdl:binding name="HelioQueryServiceServiceSoapBinding" type="tns:HelioQueryService">
<soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
{binding_operations}
</wsdl:binding>
<wsdl:service name="HelioQueryServiceService">
<wsdl:port name="HelioQueryServicePort" binding="tns:HelioQueryServiceServiceSoapBinding">
<soap:address location={quoteattr(text(endpoint_url))}/>
</wsdl:port>
</wsdl:service>
</wsdl:definitions>
"""
    return document.encode("utf-8")


def parse_request(body: bytes) -> tuple[str, dict[str, str | list[str]]]:
    """The operation of a SOAP 1.1 request and its parameters by name: ``FROM``, ``STARTTIME``
    and ``ENDTIME`` as lists (always there for the operations that have them, empty when not
    sent), the others as text when sent (an empty element: ``""``). Raises :class:`SoapError`."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise SoapError(
            f"the request may not hold a DTD, an entity or an external reference ({type(err).__name__})"
        ) from None
    except ParseError as err:
        raise SoapError(f"the request is not well-formed XML: {err}") from None
    namespace, name = _split(root.tag)
    if name != "Envelope" or namespace not in (SOAP_ENV, SOAP12_ENV):
        raise SoapError(f"the request is not a SOAP envelope (its root is {root.tag!r})")
    if namespace == SOAP12_ENV:
        raise SoapError(f"SOAP 1.2 is not served: send a SOAP 1.1 envelope ({SOAP_ENV})")
    bodies = [child for child in root if child.tag == f"{{{SOAP_ENV}}}Body"]
    if len(bodies) != 1:
        raise SoapError(f"the SOAP envelope has {len(bodies)} Body elements, not one")
    calls = [child for child in bodies[0] if isinstance(child.tag, str)]
    if not calls:
        raise SoapError("the SOAP Body names no operation")
    if len(calls) > 1:
        raise SoapError(f"the SOAP Body holds {len(calls)} elements; one operation per request")
    call = calls[0]
    _, operation = _split(call.tag)
    if operation not in PARAMETERS:
        raise SoapError(f"unknown operation {operation!r}; the operations are {', '.join(OPERATIONS)}")
    known = {name: repeated for name, _, _, repeated in PARAMETERS[operation]}
    parameters: dict[str, str | list[str]] = {name: [] for name in known if name in LISTS}
    whats: list[str] = []
    for element in call:
        _, name = _split(element.tag)
        if name not in known:
            raise SoapError(
                f"{operation} has no parameter {name!r}; its parameters are {', '.join(known) or 'none'}"
            )
        if element.get(f"{{{XSI}}}nil") in ("true", "1"):
            continue
        if len(element):
            raise SoapError(f"parameter {name} of {operation} holds elements; it must be text")
        value = element.text or ""
        if name in LISTS:
            values = parameters[name]
            assert isinstance(values, list)
            values.append(value)
        elif name == "WHAT":
            whats.append(value)
        elif name in parameters:
            raise SoapError(f"parameter {name} of {operation} is given more than once")
        else:
            parameters[name] = value
    if whats:
        parameters["WHAT"] = ", ".join(whats)
    for name, _, min_occurs, _ in PARAMETERS[operation]:
        if min_occurs and not parameters.get(name):
            raise SoapError(f"{operation} needs the parameter {name}")
    return operation, parameters


def envelope(votable: bytes, operation: str) -> bytes:
    """The SOAP 1.1 answer to ``operation``: ``votable`` (a document from
    :func:`hfc_tasks.hqi.votable.write`) inside the operation's response element."""
    if operation not in PARAMETERS:
        raise ValueError(f"unknown operation {operation!r}")
    start = votable.find(b"<VOTABLE")
    if start < 0:
        raise ValueError("not a VOTable document")
    return b"".join(
        (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<soap:Envelope xmlns:soap="' + SOAP_ENV.encode() + b'"><soap:Body>'
            b'<helio:' + RESPONSE.encode() + b' xmlns:helio="' + NAMESPACE.encode() + b'">',
            votable[start:].rstrip(),  # the declaration and astropy's comment stay out
            b"</helio:" + RESPONSE.encode() + b"></soap:Body></soap:Envelope>\n",
        )
    )


def fault(message: str, code: str = "soap:Client") -> bytes:
    """A SOAP 1.1 Fault: ``soap:Client`` (the request is wrong) or ``soap:Server``."""
    if not _FAULT_CODE.match(code):
        raise ValueError(f"not a SOAP 1.1 fault code: {code!r}")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(text(message))}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>\n"
    ).encode()


def _split(tag: str | object) -> tuple[str, str]:
    """(namespace, local name) of an element's tag."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag
