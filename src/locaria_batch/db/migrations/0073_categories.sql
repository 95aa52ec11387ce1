-- Locaria's categories (what file_import imports into and downloads by category read), managed
-- from the command line: list with item counts, add, remove.

CREATE OR REPLACE FUNCTION locaria_core.list_categories() RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(jsonb_agg(jsonb_build_object('id', c.id, 'category', c.category, 'attributes', c.attributes,
                                                 'items', (SELECT count(*) FROM locaria_data.items i
                                                            WHERE i.category_id = c.id))
                              ORDER BY c.category), '[]'::jsonb)
      FROM locaria_core.categories c
$$;

-- {"id": n, "category": name, "created": true|false}; an existing category is left as it is.
CREATE OR REPLACE FUNCTION locaria_core.add_category(p_name TEXT, p_attributes JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    v_id BIGINT;
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' OR length(p_name) > 200 THEN
        RETURN jsonb_build_object('error', 'a category needs a name of 1 to 200 characters');
    END IF;
    INSERT INTO locaria_core.categories (category, attributes) VALUES (p_name, COALESCE(p_attributes, '{}'::jsonb))
    ON CONFLICT (category) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN jsonb_build_object('id', v_id, 'category', p_name, 'created', true);
    END IF;
    SELECT id INTO v_id FROM locaria_core.categories WHERE category = p_name;
    RETURN jsonb_build_object('id', v_id, 'category', p_name, 'created', false);
END;
$$;

-- Remove a category; one that still holds items only with p_with_items (its items go with it).
CREATE OR REPLACE FUNCTION locaria_core.remove_category(p_name TEXT, p_with_items BOOLEAN DEFAULT false)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    v_id BIGINT;
    v_items BIGINT;
BEGIN
    SELECT id INTO v_id FROM locaria_core.categories WHERE category = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', format('category %s does not exist', quote_literal(p_name)));
    END IF;
    SELECT count(*) INTO v_items FROM locaria_data.items WHERE category_id = v_id;
    IF v_items > 0 AND NOT p_with_items THEN
        RETURN jsonb_build_object('error', format('category %s holds %s items; remove it with its items '
                                                  '(--with-items) or import them elsewhere first',
                                                  quote_literal(p_name), v_items));
    END IF;
    DELETE FROM locaria_core.categories WHERE id = v_id;  -- items cascade
    RETURN jsonb_build_object('id', v_id, 'category', p_name, 'removed_items', v_items);
END;
$$;
