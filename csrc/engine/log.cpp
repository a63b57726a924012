#include "engine/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "llama.h"

namespace pyspec {
namespace {
std::atomic<bool> g_verbose{false};
thread_local std::string t_recent;
thread_local ggml_log_level t_last_level = GGML_LOG_LEVEL_NONE;

void on_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_CONT) level = t_last_level;
    t_last_level = level;
    if (g_verbose.load(std::memory_order_relaxed)) {
        std::fputs(text, stderr);
    }
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
        t_recent += text;
        if (t_recent.size() > 8192) t_recent.erase(0, t_recent.size() - 8192);
    }
}
}  // namespace

void log_install() {
    static std::once_flag once;
    std::call_once(once, [] {
        llama_log_set(on_log, nullptr);
        llama_backend_init();
    });
}
void log_set_verbose(bool verbose) { g_verbose = verbose; }
void log_clear_recent() { t_recent.clear(); }
std::string log_recent() {
    std::string s = t_recent;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

}  // namespace pyspec
