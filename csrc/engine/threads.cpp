#include "engine/threads.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "engine/error.h"

#if defined(__linux__)
#include <sched.h>
#endif

namespace pyspec {

namespace {

std::string read_line(const std::string & path) {
    std::ifstream f(path);
    std::string s;
    if (!f || !std::getline(f, s)) return "";
    return s;
}

}  // namespace

int32_t default_n_threads() {
    if (const char * env = std::getenv("PYSPEC_THREADS")) {
        std::string s(env);
        s.erase(0, s.find_first_not_of(" \t\n"));
        s.erase(s.find_last_not_of(" \t\n") + 1);
        if (!s.empty()) {
            const bool digits = std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
            if (!digits || s.size() > 6 || std::stoi(s) < 1)
                throw InvalidParameterError("PYSPEC_THREADS must be a whole number >= 1, got '" + s +
                                            "'; unset it to use the default (the physical cores)");
            return std::stoi(s);
        }
    }
#if defined(__linux__)
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
        std::set<std::pair<std::string, std::string>> cores;  // (package, core)
        for (int c = 0; c < CPU_SETSIZE; ++c) {
            if (!CPU_ISSET(c, &mask)) continue;
            const std::string topo = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
            const std::string pkg = read_line(topo + "physical_package_id");
            const std::string core = read_line(topo + "core_id");
            if (pkg.empty() || core.empty()) cores.insert({"cpu", std::to_string(c)});  // no topology: the CPU
            else cores.insert({pkg, core});
        }
        if (!cores.empty()) return int32_t(cores.size());
    }
#endif
    return int32_t(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace pyspec
