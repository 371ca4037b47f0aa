"""The template's task state machine part: its ASL (asl-validator), its wiring, cfn-lint."""

from __future__ import annotations

import json
import re
import subprocess

from importer.aws import statemachine
from importer.aws.deploy import render_template
from tests.test_deploy import require_tool
from tests.test_statemachine import ARN, asl_validate


def substituted(template: dict, timeout: int = 900) -> dict:
    """What CloudFormation's Fn::Sub makes of the DefinitionString."""
    text, variables = template["Resources"]["TaskStateMachine"]["Properties"]["DefinitionString"][
        "Fn::Sub"
    ]
    assert set(variables) == {"TaskFunctionArn"}
    assert set(re.findall(r"\$\{([^}]+)\}", text)) == {"TaskFunctionArn", "TaskTimeoutSeconds"}
    text = text.replace("${TaskFunctionArn}", ARN).replace("${TaskTimeoutSeconds}", str(timeout))
    return json.loads(text)


def test_the_deployed_definition_is_the_generated_one_with_its_timeout_a_number():
    t = render_template()
    assert substituted(t) == statemachine.task_definition(lambda_arn=ARN)
    assert substituted(t, 3600)["TimeoutSeconds"] == 3600
    assert t["Parameters"]["TaskTimeoutSeconds"]["Default"] == 900
    result = asl_validate(substituted(t, 1800))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_machine_is_named_so_the_framework_routes_it_and_wired_to_its_queues():
    t = render_template()
    r = t["Resources"]
    machine = r["TaskStateMachine"]
    assert machine["Condition"] == "TaskMachine"
    assert "sfn-task" in machine["Properties"]["StateMachineName"]["Fn::Sub"]
    fn = r["TaskFunction"]["Properties"]
    assert fn["Handler"] == "importer.aws.task_machine.lambda_handler"
    events = fn["Events"]
    pattern = events["ImportEnded"]["Properties"]["Pattern"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "ImportCsvStateMachine"}]
    assert events["SubTaskStatus"]["Properties"]["Queue"] == {
        "Fn::GetAtt": ["SubTaskStatusQueue", "Arn"]
    }
    action = r["TaskActionFunction"]["Properties"]
    assert action["Environment"]["Variables"]["SFN_TASK_ARN"] == {"Ref": "TaskStateMachine"}
    for queue, dlq in (
        ("TaskActionQueue", "TaskActionDeadLetterQueue"),
        ("SubTaskStatusQueue", "SubTaskStatusDeadLetterQueue"),
    ):
        redrive = r[queue]["Properties"]["RedrivePolicy"]
        assert redrive == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
            "maxReceiveCount": 5,
        }
    statements = fn["Policies"][0]["Statement"]
    resume = next(
        s for s in statements if isinstance(s, dict) and s.get("Sid") == "ResumeIteration"
    )
    assert resume["Action"] == ["states:SendTaskSuccess"]
    assert "sfn-task-handler" in resume["Resource"][0]["Fn::Sub"]


def test_cfn_lint_accepts_the_template_with_the_task_machine(tmp_path):
    cfn_lint = require_tool("cfn-lint")
    t = render_template()
    t["Parameters"]["DeployTaskMachine"]["Default"] = "true"
    t["Parameters"]["TasksTableName"]["Default"] = "dev-app-tasks"
    path = tmp_path / "template.json"
    path.write_text(json.dumps(t, indent=2))
    result = subprocess.run(
        [cfn_lint, "--", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_importer_asl_prints_the_task_machine(capsys):
    from importer.cli.main import main

    assert main(["asl", "--machine", "task"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == statemachine.task_definition()
    assert "${TaskFunctionArn}" in captured.err
