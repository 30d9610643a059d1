//! CSV feeders in a run: the values that reached the server are the rows, in order
//! (`sequential`: row = iteration number modulo rows, whichever worker runs it) or at random.

mod common;

use std::collections::BTreeSet;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_and_random_feeders_fill_the_requests() {
    let server = Server::start(Behavior::Fast, true);
    let (dir, path) = common::scenario(&format!(
        r#"
        [feeders.users]
        csv = "users.csv"
        order = "sequential"
        [feeders.colours]
        csv = "colours.csv"
        order = "random"

        [targets.api]
        kind = "http"
        url = "{}"

        [[scenarios]]
        name = "users"
        executor = "constant-vus"
        vus = 2
        iterations = 30
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/u/{{{{seq}}}}/{{{{users.id}}}}/{{{{users.name}}}}" }}

        [[scenarios]]
        name = "colours"
        executor = "constant-vus"
        vus = 2
        iterations = 300
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/c/{{{{seq}}}}/{{{{colours.name}}}}" }}
        "#,
        server.url()
    ));
    let users = [("1", "ann"), ("2", "bob"), ("3", "cy")];
    let colours = ["red", "green", "blue"];
    std::fs::write(
        dir.path().join("users.csv"),
        "id,name\n1,ann\n2,bob\n3,cy\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("colours.csv"), "name\nred\ngreen\nblue\n").unwrap();
    let (report, outcome) = common::run_file(&path, Default::default()).await.unwrap();
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert_eq!(report.total.requests, 330);

    let (mut user_seqs, mut drawn) = (BTreeSet::new(), Vec::new());
    for p in server.paths() {
        let parts: Vec<&str> = p.split('/').collect();
        match parts.as_slice() {
            ["", "u", seq, id, name] => {
                let seq: usize = seq.parse().unwrap();
                assert_eq!((*id, *name), users[seq % 3], "{p}");
                user_seqs.insert(seq);
            }
            ["", "c", seq, name] => drawn.push((seq.parse::<usize>().unwrap(), name.to_string())),
            ["", ""] => {} // the shadow probe
            _ => panic!("unexpected request {p}"),
        }
    }
    assert_eq!(user_seqs, (0..30).collect());
    assert_eq!(drawn.len(), 300);
    // Random rows: every value is a row, each of the 3 rows turns up in 300 draws, and the
    // rows do not follow the iteration numbers (by chance, once in 3^300).
    assert!(
        drawn.iter().all(|(_, c)| colours.contains(&c.as_str())),
        "{drawn:?}"
    );
    let kinds: BTreeSet<&str> = drawn.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(
        drawn.iter().any(|(seq, c)| c != colours[seq % 3]),
        "random rows came in sequence"
    );
}
