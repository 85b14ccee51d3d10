-- 0007_hqi_row_guard: the HQI query service's bound on one row.
--
-- SQLSelect takes SQL fragments from its clients (WHAT may compute any value). The service reads
-- rows a batch at a time and caps the page, but one row could still be made huge
-- (repeat('x', 500000000)); this function, called on every row's size in the database, stops the
-- query there with a message the client can act on, before the row reaches the service.
create function hfc.hqi_row_within(row_bytes integer, max_bytes integer) returns boolean
language plpgsql immutable parallel safe as $$
begin
    if row_bytes > max_bytes then
        raise exception 'a row of % bytes is larger than this service''s limit of % bytes: select fewer or smaller columns',
            row_bytes, max_bytes using errcode = '54000';
    end if;
    return true;
end
$$;
