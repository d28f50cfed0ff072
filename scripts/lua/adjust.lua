-- adjust.lua: change a code's existing bucket on one shard, never creating
-- one: add tokens (set-max up, or putting back a refused cut), remove free
-- tokens (set-max down), set disabled (disable / enable), or only clear
-- the sold-out mark (tokens came back on some shard).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] tokens: > 0 added, < 0 up to that many free tokens removed
-- ARGV[2] disabled: '0' or '1' sets it, '' leaves it
-- ARGV[3] confirmation window cw in ms: > 0 sets it, '0' removes it (no
--         holds), '' or absent leaves it. Holds already taken keep their
--         deadlines: only the next signups read cw.
-- Reply: -1 no bucket, nothing changed (seeding will read MongoDB);
-- otherwise the tokens added or removed.
--
-- Every change but a removal clears the sold-out mark, so the next
-- request looks at the shards again.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local n = tonumber(ARGV[1])
local moved = n
if n < 0 then
  local t = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
  moved = math.min(math.max(t, 0), -n)
  if moved > 0 then
    redis.call('HINCRBY', KEYS[1], 'tok', -moved)
  end
else
  if n > 0 then
    redis.call('HINCRBY', KEYS[1], 'tok', n)
  end
  redis.call('HSET', KEYS[1], 'so', 0)
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'dis', ARGV[2])
end
if ARGV[3] and ARGV[3] ~= '' then
  if tonumber(ARGV[3]) > 0 then
    redis.call('HSET', KEYS[1], 'cw', ARGV[3])
  else
    redis.call('HDEL', KEYS[1], 'cw')
  end
end
return moved
