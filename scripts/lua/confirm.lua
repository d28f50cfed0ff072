-- confirm.lua: turn one hold into a registration, on the email's shard.
--
-- KEYS[1] email claim     {ns:s}:e:<canon>   h|<code>|<deadline>|<hold id>|<epoch>
-- KEYS[2] hold deadlines  {ns:s}:hx          sorted set
-- KEYS[3] reservation log {ns:s}:x           stream
-- KEYS[4] token bucket    {ns:s}:b:<code>    for a reseed's freeze
-- KEYS[5] history         {ns:s}:h           Redis' replication ID the shard
--                                            was seeded or recovered in
-- KEYS[6] seeded sentinel {ns:s}:seeded      set once the shard was seeded
-- ARGV[1] code   ARGV[2] canonical email   ARGV[3] hold id
-- ARGV[4] email as entered   ARGV[5] now (unix ms, for the entry)
-- ARGV[6] "1" when the caller WAITs for replicas: a repeat writes the
--         claim again, so that its WAIT covers it (as reserve.lua)
--
-- Reply: {1, entry id}  confirmed: the claim is the code's now, and an
--                       entry (field hc: the hold id) tells the reconciler
--                       to write the registration
--        {2}            the email already holds this code (a repeat)
--        {3}            the hold's deadline passed (Redis' clock): refused,
--                       expire.lua gives the seat back
--        {4}            no such hold (another code's, another hold, expired
--                       and swept, never)
--        {5, ms}        the code is frozen by a reseed for about ms more:
--                       retry (the reseed counts the live holds it read)
--        {6}            this Redis is no longer the history the shard was
--                       seeded in (a failover): the hold's expiry and the
--                       seat taken again after it may be lost, so nothing
--                       is confirmed until the service recovered the shard
--        {7}            the shard is not seeded (a wiped Redis): the
--                       service seeds it from MongoDB, live holds
--                       included, then asks again

if not redis.call('GET', KEYS[6]) then
  return {7}
end
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  if ARGV[6] == '1' then
    redis.call('SET', KEYS[1], owner, 'KEEPTTL')
  end
  return {2}
end
local hcode, hdl, hid
if owner then
  hcode, hdl, hid = string.match(owner, '^h|([^|]+)|(%d+)|([^|]+)|')
end
if not hcode or hcode ~= ARGV[1] or hid ~= ARGV[3] then
  return {4}
end
local t = redis.call('TIME')
local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(hdl) <= snow then
  return {3}
end
local frz = tonumber(redis.call('HGET', KEYS[4], 'frz') or '0') or 0
if frz > snow then
  return {5, frz - snow}
end
local info = redis.pcall('INFO', 'replication')
local cur = type(info) == 'string' and string.match(info, 'master_replid:(%x+)')
if cur then
  local hist = redis.call('GET', KEYS[5])
  if hist and hist ~= cur then
    return {6}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
local id = redis.call('XADD', KEYS[3], '*', 'c', ARGV[1], 'k', ARGV[2], 'e', ARGV[4], 't', ARGV[5], 'hc', hid)
return {1, id}
