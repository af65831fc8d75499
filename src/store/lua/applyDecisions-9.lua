--[[
  Writes the poller's decisions, each atomically: new state, events, next due time, and, for a
  job that is done with, its removal from the pending set.

  A decision is written only while its lease holds (the schedule score still equals the claimed
  score) and the stored version is the one the decision was made from. That compare-and-set
  makes the script safe to run twice (ioredis resends unanswered commands after a reconnect)
  and makes a replica whose lease was taken over harmless: it can neither duplicate nor
  reorder events. Events are appended in the same script as the version bump, so after a crash
  at any instant either both exist or neither does.

  KEYS[1] schedule  zset      KEYS[5] aliases  hash, job id -> other spellings
  KEYS[2] state     hash      KEYS[6] expiry   zset, job id -> when its state may be dropped
  KEYS[3] pending   set       KEYS[7] events   stream
  KEYS[4] tracked   set       KEYS[8] alerts   stream
  KEYS[9] finals    hash, job id -> entry id in events of its last status_changed/not_found
                    event, prefixed "f" once the job is done with (read by waitFor)

  ARGV[1] stream MAXLEN (approximate)
  ARGV[2] expireAt (ms) for the state of a job that is done with
  ARGV[3] number of decisions, then per decision:
    id, leaseScore, expectedVersion, newState, nextDue ("" = done with), eventCount,
    then per event: alert ("1"/"0"), data, eventId, type, subject, time

  Returns one code per decision: 1 written, 2 lease lost, 3 version conflict
]]
local rcall = redis.call
local schedule, state, pending, tracked, aliases, expiry, events, alerts, finals =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
--- @include "expectKeyType"
expect(schedule, "zset")
expect(state, "hash")
expect(pending, "set")
expect(tracked, "set")
expect(aliases, "hash")
expect(expiry, "zset")
expect(events, "stream")
expect(alerts, "stream")
expect(finals, "hash")

local maxlen = ARGV[1]
local expireAt = ARGV[2]
local n = tonumber(ARGV[3])

local codes = {}
local p = 4
for d = 1, n do
  local id, lease, expected, newState, nextDue = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4]
  local eventCount = tonumber(ARGV[p + 5])
  local first = p + 6
  p = first + eventCount * 6

  local score = rcall("ZSCORE", schedule, id)
  if not score or tonumber(score) ~= tonumber(lease) then
    codes[d] = 2
  else
    local current = rcall("HGET", state, id)
    local version = 0
    if current then
      version = tonumber(string.match(current, "^(%d+)|")) or -1
    end
    if version ~= tonumber(expected) then
      codes[d] = 3
    else
      rcall("HSET", state, id, newState)
      local statusEntry = nil
      for e = first, first + (eventCount - 1) * 6, 6 do
        local fields = { "MAXLEN", "~", maxlen, "*", "data", ARGV[e + 1], "id", ARGV[e + 2],
          "type", ARGV[e + 3], "subject", ARGV[e + 4], "time", ARGV[e + 5] }
        local entry = rcall("XADD", events, unpack(fields))
        local t = ARGV[e + 3]
        if t == "idunox.job.status_changed" or t == "idunox.job.not_found" then
          statusEntry = entry
        end
        if ARGV[e] == "1" then
          rcall("XADD", alerts, unpack(fields))
        end
      end
      if nextDue == "" then
        -- Done with: the final event (if any) was written above, so removal loses nothing.
        rcall("ZREM", schedule, id)
        rcall("SREM", pending, id)
        rcall("SREM", tracked, id)
        local spellings = rcall("HGET", aliases, id)
        if spellings then
          for spelling in string.gmatch(spellings, "[^,]+") do
            rcall("SREM", pending, spelling)
            rcall("SREM", tracked, spelling)
          end
          rcall("HDEL", aliases, id)
        end
        rcall("ZADD", expiry, expireAt, id)
        -- Marked done, kept as long as the state: waitFor answers at once for a job finished
        -- before it was called. A job can end without a status event of its own (a failed job
        -- whose last attempt ran out between two polls, one already final when tracked again);
        -- its last recorded status event is then the final one.
        local last = statusEntry or rcall("HGET", finals, id)
        if last then
          if string.sub(last, 1, 1) == "f" then
            last = string.sub(last, 2)
          end
          rcall("HSET", finals, id, "f" .. last)
        end
      else
        if statusEntry then
          rcall("HSET", finals, id, statusEntry)
        end
        rcall("ZADD", schedule, "XX", nextDue, id)
      end
      codes[d] = 1
    end
  end
end
return codes
