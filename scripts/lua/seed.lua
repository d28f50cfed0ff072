-- seed.lua: create one shard's bucket for a code unless it exists.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] tokens  ARGV[2] disabled (0|1)  ARGV[3] expires (unix ms, 0: never)
-- ARGV[4] epoch of this seeding (tokens moved before a wipe carry another
-- epoch and are dropped, see reserve.lua)
-- Reply: 1 created, 0 already there (left untouched).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'so', 0, 'dis', ARGV[2], 'exp', ARGV[3], 'ep', ARGV[4], 'cw', ARGV[5] or 0)
return 1
