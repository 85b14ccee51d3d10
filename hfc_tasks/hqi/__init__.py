"""The HQI query service (issue 12, docs/hqi.md): the HELIO Query Interface of the HFC, so that
its own clients (pyhfc, IDL, SolarSoft, SOAP toolkits) read this catalogue unchanged.

:mod:`.where` (the HQI ``WHERE`` syntax and the time rule as parameterised SQL), :mod:`.tables`
(the tables served, read from the catalogue), :mod:`.reader` (the operations and the bounds that
keep SQL fragments harmless), :mod:`.answer`, :mod:`.votable` (astropy), :mod:`.soap` (WSDL,
requests, faults), :mod:`.app` (the Starlette application). Domain code: no Airflow import.
"""
