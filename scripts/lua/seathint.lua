-- seathint.lua: seat hints of MongoDB's cap (docs/ARCHITECTURE.md, "MongoDB
-- holds the cap"), for several codes in one call.
--
-- KEYS[i]  {ns:0}:q:<code>   string: the code's next hint (absent: 0)
-- ARGV[1]  "take" or "raise"
-- ARGV[1+i]
--   take:  how many hints code i needs; the reply's i-th element is the
--          first of them (the counter moves past them)
--   raise: a seat every hint of code i must be at or above from now on;
--          the counter moves up to it, never down (reply: the counters)
--
-- All keys carry shard 0's hash tag: one Redis (Cluster) node, one call.

local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[1 + i])
  if ARGV[1] == 'take' then
    out[i] = redis.call('INCRBY', key, n) - n
  else
    local cur = tonumber(redis.call('GET', key) or '0') or 0
    if cur < n then
      redis.call('SET', key, n)
      cur = n
    end
    out[i] = cur
  end
end
return out
