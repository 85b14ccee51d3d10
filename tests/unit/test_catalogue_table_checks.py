"""What the loader refuses to load before writing a row (issue 13): a kind the batch cannot own,
a metadata table PostgreSQL cannot match by its declared key."""

from __future__ import annotations

import pytest

from hfc_tasks.catalogue.formats import FormatError
from hfc_tasks.catalogue.tables import Table, check_match_key, check_owned

ANNOTATIONS = Table("annotations", {"id_annotation", "field_name", "table_name", "ucd", "utype", "description"},
                    "id_annotation", (frozenset({"id_annotation"}), frozenset({"field_name"})))
OBSERVATORY = Table("observatory", {"id_observatory", "observat", "instrume", "telescop", "wavemin", "wavename"},
                    "id_observatory", (frozenset({"id_observatory"}),
                                       frozenset({"observat", "instrume", "telescop", "wavemin", "wavename"})))


def test_a_kind_into_a_table_without_batch_id_is_refused_saying_what_to_do():
    with pytest.raises(FormatError) as err:
        check_owned(ANNOTATIONS, "site_annotations")
    message = str(err.value)
    assert message.startswith("kind site_annotations: hfc.annotations has no batch_id column")
    assert "re-run" in message and "metadata_tables" in message and "migration" in message
    check_owned(Table("noaa", {"id_noaa", "noaa_number", "batch_id"}, "id_noaa"), "site_noaa")


def test_a_match_key_needs_a_unique_index_on_exactly_its_columns():
    check_match_key(ANNOTATIONS, ("field_name",))
    check_match_key(OBSERVATORY, ("wavename", "observat", "instrume", "telescop", "wavemin"))  # any order
    for key in (("table_name",), ("field_name", "table_name")):
        with pytest.raises(FormatError) as err:
            check_match_key(ANNOTATIONS, key)
        message = str(err.value)
        assert f"hfc.annotations: no unique index or constraint on exactly its match key ({', '.join(key)})" in message
        assert "(field_name)" in message  # the keys it does have
    with pytest.raises(FormatError, match=r"names column\(s\) \['code'\] it does not have"):
        check_match_key(ANNOTATIONS, ("code",))
