-- file_import: items copied from a loaded file remember where they came from, so that
-- importing the same file again updates its items instead of duplicating them.

ALTER TABLE locaria_data.items ADD COLUMN IF NOT EXISTS source_file_id BIGINT;
ALTER TABLE locaria_data.items ADD COLUMN IF NOT EXISTS source_table TEXT;
ALTER TABLE locaria_data.items ADD COLUMN IF NOT EXISTS source_fid BIGINT;

-- rows not imported from a file have NULLs here and never conflict
CREATE UNIQUE INDEX IF NOT EXISTS items_source_idx
    ON locaria_data.items (source_file_id, source_table, source_fid);
