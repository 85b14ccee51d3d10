"""The HQI query service (issue 12, in progress): the HELIO Query Interface of the HFC, so that
its own clients (pyhfc, IDL, SolarSoft, SOAP toolkits) read this catalogue unchanged.

Built so far: :mod:`hfc_tasks.hqi.where` (the HQI ``WHERE`` syntax and the time rule turned into
parameterised SQL against a table's known columns) and :mod:`hfc_tasks.hqi.tables` (the tables
served, their columns and time columns, read from the catalogue). Domain code: no Airflow import.
"""
