-- The console's text search ("name, table or id") finds rows by a part of their name or table among
-- any number of files: trigram indexes answer ILIKE '%part%' without reading every row.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS files_name_trgm_idx ON locaria_core.files
    USING gin ((attributes->>'name') gin_trgm_ops);
CREATE INDEX IF NOT EXISTS files_table_trgm_idx ON locaria_core.files
    USING gin ((attributes->>'imported_table_name') gin_trgm_ops);
