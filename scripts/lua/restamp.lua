-- restamp.lua: a reseed's rebuild counts one email's live hold on a code
-- and moves it into the rebuilt buckets' epoch, on the email's shard.
--
-- KEYS[1] email claim  {ns:s}:e:<canon>  h|<code>|<deadline>|<hold id>|<epoch>
-- KEYS[2] token bucket {ns:s}:b:<code>   (the same shard)
-- ARGV[1] code   ARGV[2] the rebuild's new epoch   ARGV[3] its freeze's owner
--
-- Reply: 1 a live hold of the code (now of the new epoch: the rebuild
-- counts its seat, and its expiry gives the seat back to the rebuilt
-- bucket); 0 anything else (past its deadline: the rebuild does not count
-- it, and its expiry gives nothing back: the buckets have the new epoch
-- since the rebuild zeroed them); -1 the caller's freeze was lost (another
-- reseed took over): nothing changed.

local b = redis.call('HMGET', KEYS[2], 'frz', 'fo')
local t = redis.call('TIME')
local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if b[2] ~= ARGV[3] or (tonumber(b[1]) or 0) <= snow then
  return -1
end
local owner = redis.call('GET', KEYS[1])
if not owner then
  return 0
end
local pre, hcode, hdl = string.match(owner, '^(h|([^|]+)|(%d+)|[^|]+|)')
if not pre or hcode ~= ARGV[1] then
  return 0
end
if tonumber(hdl) <= snow then
  return 0
end
redis.call('SET', KEYS[1], pre .. ARGV[2], 'KEEPTTL')
return 1
