-- The campaign's state for the runner's next chunk (a pause or a cancel committed before it stops it).
SELECT status FROM campaigns WHERE id = %(id)s
