"""The HQI query service (issue 12, in progress): the HELIO Query Interface of the HFC, so that
its own clients (pyhfc, IDL, SolarSoft, SOAP toolkits) read this catalogue unchanged.

Built so far: :mod:`hfc_tasks.hqi.where`, the HQI ``WHERE`` syntax and the time rule turned into
parameterised SQL against a table's known columns. Domain code: no Airflow import.
"""
