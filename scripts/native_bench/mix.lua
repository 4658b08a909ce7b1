-- A mixed Lua workload for the native host's benchmark: the interpreter's dispatch loop plus
-- its string, table, metatable, closure, coroutine and GC code, so the hot code is spread over
-- much of lua's text.  Deterministic: it prints one checksum line per phase.
-- usage: lua mix.lua [SCALE]
local scale = tonumber(arg and arg[1]) or 1

local function checksum(s)
  local h = 0
  for i = 1, #s, 7 do h = (h * 31 + s:byte(i)) % 4294967296 end
  return h
end

local function phase_strings(n)
  local parts = {}
  for i = 1, n do
    local s = string.format("%d:%s:%5.2f", i, ("x"):rep(i % 13), i / 7)
    s = s:gsub("x+", function(m) return #m .. "" end)
    parts[#parts + 1] = s:upper():sub(2, 12)
  end
  return checksum(table.concat(parts, ","))
end

local function phase_tables(n)
  local t = {}
  for i = 1, n do t[i] = { key = (i * 7919) % n, name = "k" .. i } end
  table.sort(t, function(a, b) return a.key < b.key or (a.key == b.key and a.name < b.name) end)
  local acc = 0
  for i = 1, n, 3 do acc = (acc + t[i].key * i) % 1000003 end
  return acc
end

local Vec = {}
Vec.__index = Vec
Vec.__add = function(a, b) return setmetatable({ x = a.x + b.x, y = a.y + b.y }, Vec) end
Vec.__mul = function(a, k) return setmetatable({ x = a.x * k, y = a.y * k }, Vec) end
function Vec.new(x, y) return setmetatable({ x = x, y = y }, Vec) end
function Vec:len2() return self.x * self.x + self.y * self.y end

local function phase_objects(n)
  local v = Vec.new(0, 0)
  for i = 1, n do
    v = (v + Vec.new(i % 5, i % 3)) * 0.5
  end
  return math.floor(v:len2() * 1000)
end

local function phase_coroutines(n)
  local gen = coroutine.wrap(function()
    for i = 1, n do coroutine.yield(i * i % 97) end
  end)
  local acc = 0
  for _ = 1, n do acc = acc + gen() end
  return acc
end

local function phase_closures(n)
  local fs = {}
  for i = 1, 64 do fs[i] = function(x) return (x * i + 1) % 65521 end end
  local x = 1
  for i = 1, n do x = fs[(i % 64) + 1](x) end
  return x
end

local total = 0
for round = 1, scale do
  local r = {
    phase_strings(20000), phase_tables(30000), phase_objects(200000),
    phase_coroutines(100000), phase_closures(400000),
  }
  for _, v in ipairs(r) do total = (total * 131 + v) % 4294967296 end
  collectgarbage("step", 0)
end
print(("mix.lua scale %d checksum %d"):format(scale, total))
