-- duehold.lua: the holds of one shard due by Redis' clock (the clock that
-- set their deadlines), for the expirer.
--
-- KEYS[1] hold deadlines  {ns:s}:hx
-- ARGV[1] the most to return
--
-- Reply: canonical emails whose hold's deadline is at or before now.

local t = redis.call('TIME')
local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', snow, 'LIMIT', 0, tonumber(ARGV[1]))
