-- 0009_noaa_batch: NOAA numbers and their links to features owned by the batch that loaded them
-- (issue 13).
--
-- An FRC may write NOAA files (its features' NOAA active-region numbers: NOAA rows and the
-- NOAA_SP / NOAA_AR links to its sunspots and active regions) like any other product file. The
-- loader replaces a night by deleting its hfc.batch row, and only rows pointing at that batch go
-- with it: without a batch_id, re-running a night would leave the previous run's NOAA rows and
-- add the same ones again (noaa_sp/noaa_ar rows would go by their feature's cascade, but the
-- NOAA rows they pointed at would stay, duplicated at every re-run). The loader refuses a kind
-- whose table has no batch_id for that reason.
--
-- Nullable, like chgroups.batch_id: NOAA rows put there by other means (an operator's import of
-- the NOAA list) belong to no batch and keep NULL, so no night's re-run ever deletes them. Not
-- exposed by any view.

alter table hfc.noaa add column batch_id bigint references hfc.batch (id) on delete cascade;
alter table hfc.noaa_sp add column batch_id bigint references hfc.batch (id) on delete cascade;
alter table hfc.noaa_ar add column batch_id bigint references hfc.batch (id) on delete cascade;
create index noaa_batch_id_idx on hfc.noaa (batch_id);
create index noaa_sp_batch_id_idx on hfc.noaa_sp (batch_id);
create index noaa_ar_batch_id_idx on hfc.noaa_ar (batch_id);
