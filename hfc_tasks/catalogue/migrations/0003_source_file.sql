-- 0003_source_file: the product file each observations / pp_output row was loaded from.
--
-- Feature rows name their file in feat_filename and tracking rows in track_filename; these two
-- tables had no such column, so the provenance of an observation stopped at its batch. With
-- src_file every loaded row leads, in one join, to its hfc.batch_file entry (name, sha256).
-- Not exposed by any view. Rows loaded before this migration keep NULL.

alter table hfc.observations add column src_file varchar(150);
alter table hfc.pp_output add column src_file varchar(150);
