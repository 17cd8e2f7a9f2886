//! What a sync link's failure means to the people at the node, in Chinese.
//!
//! The errors of a link come from QUIC, TLS and the protocol as English technical text
//! (`dial: no handshake within 10s`, `TLS: invalid peer certificate: Revoked`); logs and the
//! API keep that text. Pages show what it means and what to do: [`zh`] sorts the text into
//! the few causes a clerk or an administrator can act on. Unknown text gets a general
//! sentence that points to the log, never the English itself.

/// One cause of a failed link, in the order it is looked for.
struct Cause {
    /// Any of these (lower-case) in the error text.
    needles: &'static [&'static str],
    zh: &'static str,
}

const CAUSES: &[Cause] = &[
    Cause {
        needles: &["revoked"],
        zh: "证书已被县级吊销，无法同步；请联系县级安全管理员",
    },
    Cause {
        needles: &["expired", "notvalidyet", "not valid yet", "notvalidforname"],
        zh: "证书不在有效期内：请核对本机日期和时间，或请县级重新签发证书",
    },
    Cause {
        needles: &[
            "unknownissuer",
            "unknown issuer",
            "badsignature",
            "another ca",
        ],
        zh: "对方证书不是本县证书机构签发的，连接被拒绝",
    },
    Cause {
        needles: &[
            "no handshake within",
            "timed out",
            "timedout",
            "idle timeout",
        ],
        zh: "连接超时：网络中断或县级节点未响应，恢复后自动重连",
    },
    Cause {
        needles: &["connection refused", "connectionrefused", "unreachable"],
        zh: "无法连接：县级节点未运行或网络不通，恢复后自动重连",
    },
    Cause {
        needles: &[
            "node stopping",
            "closed by peer",
            "applicationclosed",
            "aborted by peer",
        ],
        zh: "对方节点已停止或重启，稍后自动重连",
    },
    Cause {
        needles: &["reset", "locally closed", "connectionclosed"],
        zh: "连接已断开，稍后自动重连",
    },
    Cause {
        needles: &["cannot bind", "cannot listen"],
        zh: "无法打开同步端口：请检查配置中的地址是否被占用",
    },
    Cause {
        needles: &["certificate", "tls", "handshake"],
        zh: "安全握手失败：请检查本节点证书是否由本县签发且在有效期内",
    },
    Cause {
        needles: &["hello names", "identity"],
        zh: "对方声明的节点身份与其证书不符，连接被拒绝",
    },
    Cause {
        needles: &["silent", "stalled"],
        zh: "对方长时间无响应，已断开并将重连",
    },
    Cause {
        needles: &["store", "disk", "no space"],
        zh: "本节点数据库写入失败：请检查磁盘空间",
    },
    Cause {
        needles: &["closed"],
        zh: "连接已关闭，稍后自动重连",
    },
];

/// What the failure text `raw` means, in Chinese.
pub fn zh(raw: &str) -> &'static str {
    let text = raw.to_ascii_lowercase();
    CAUSES
        .iter()
        .find(|c| c.needles.iter().any(|n| text.contains(n)))
        .map_or("同步出错，详情见节点日志", |c| c.zh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_failures_read_as_their_cause_and_unknown_ones_point_to_the_log() {
        assert!(zh("dial: no handshake within 10s").starts_with("连接超时"));
        assert!(zh("TLS: invalid peer certificate: Revoked").contains("吊销"));
        assert!(zh("connection: the cryptographic handshake failed: error 48: invalid peer certificate: UnknownIssuer").contains("不是本县"));
        assert!(zh("connection: aborted by peer: node stopping").contains("停止"));
        assert!(zh("something new").contains("日志"));
        for c in CAUSES {
            assert!(!c.zh.is_ascii(), "{}", c.zh);
        }
    }
}
